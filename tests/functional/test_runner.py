"""The runner proven on test-only stages: caching, invalidation, sweeps, kills, locks."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from instageo.cli import main
from instageo.runner.cache import RunLock
from tests.conftest import REPO
from tests.fake_stages import BROKEN_FOURTH, BROKEN_PIPELINE, ITEMS, NOISY_PIPELINE, PIPELINE

RECIPE = """
name: r
seed: 1
data:
  source: {kind: demo, seed: 3}
  chips: {size: 16}
teacher:
  train: {lr: 0.001}
student:
  depth: 2
"""


@pytest.fixture
def recipe(write_recipe):
    return write_recipe(RECIPE)


def run(recipe, runs, *args, pipeline=PIPELINE):
    code = main([str(recipe), "--runs-dir", str(runs), *args], pipeline=pipeline)
    report = json.loads((runs / "r" / "report.json").read_text())
    return code, report


def ran(report) -> list[tuple[str, list[str]]]:
    return [(s["name"], s["variants"]) for s in report["stages"] if not s["cached"]]


def plan_lines(capsys, recipe, runs, *args) -> list[str]:
    capsys.readouterr()
    assert main(["plan", str(recipe), "--runs-dir", str(runs), *args], pipeline=PIPELINE) == 0
    return capsys.readouterr().out.splitlines()[1:]


def test_first_run_runs_everything_and_a_rerun_nothing(recipe, tmp_path):
    code, report = run(recipe, tmp_path)
    assert code == 0 and report["status"] == "ok"
    assert [name for name, _ in ran(report)] == ["prepare", "fit", "distill", "package"]
    code, again = run(recipe, tmp_path)
    assert code == 0 and ran(again) == []
    assert [s["key"] for s in again["stages"]] == [s["key"] for s in report["stages"]]


def test_changing_a_field_reruns_exactly_the_stages_downstream(recipe, tmp_path, capsys):
    run(recipe, tmp_path)
    lines = plan_lines(capsys, recipe, tmp_path, "--set", "student.depth=3")
    assert [line.split()[3] for line in lines] == ["cached", "cached", "run", "run"]
    assert lines[2].endswith("config field student.depth changed (2 -> 3)")
    assert lines[3].endswith("upstream distill changed")
    _, report = run(recipe, tmp_path, "--set", "student.depth=3")
    assert [name for name, _ in ran(report)] == ["distill", "package"]

    lines = plan_lines(capsys, recipe, tmp_path, "--set", "data.chips.size=32")
    assert [line.split()[3] for line in lines] == ["run"] * 4
    assert lines[0].endswith("config field data.chips.size changed (16 -> 32)")
    assert lines[1].endswith("upstream prepare changed")


def test_plan_of_a_cached_run_says_cached_and_force_reruns_downstream(recipe, tmp_path, capsys):
    run(recipe, tmp_path)
    assert all(line.split()[3] == "cached" for line in plan_lines(capsys, recipe, tmp_path))
    lines = plan_lines(capsys, recipe, tmp_path, "--force", "fit")
    assert [line.split()[-2:] for line in lines][1:] == [["run", "forced"], ["fit", "forced"], ["distill", "forced"]]
    _, report = run(recipe, tmp_path, "--force", "fit")
    assert [name for name, _ in ran(report)] == ["fit", "distill", "package"]


def test_a_changed_input_file_reruns_its_stage(write_recipe, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    recipe = write_recipe(RECIPE.replace("teacher:\n", "teacher:\n  weights: w.pt\n"))
    run(recipe, tmp_path / "runs")
    weights.write_bytes(b"two")
    lines = plan_lines(capsys, recipe, tmp_path / "runs")
    assert lines[1].split()[3] == "run" and lines[1].endswith("file of teacher.weights changed")


def test_a_sweep_runs_shared_stages_once(recipe, tmp_path):
    code, report = run(recipe, tmp_path, "--set", "student.depth=2,4,6")
    assert code == 0
    assert ran(report) == [
        ("prepare", ["student.depth=2", "student.depth=4", "student.depth=6"]),
        ("fit", ["student.depth=2", "student.depth=4", "student.depth=6"]),
        ("distill", ["student.depth=2"]), ("package", ["student.depth=2"]),
        ("distill", ["student.depth=4"]), ("package", ["student.depth=4"]),
        ("distill", ["student.depth=6"]), ("package", ["student.depth=6"]),
    ]
    assert [v["sweep"] for v in report["variants"]] == [{"student.depth": d} for d in (2, 4, 6)]
    assert [v["student_depth"] for v in report["variants"]] == [2, 4, 6]
    # each variant's entry gets the summary of its own student stage
    assert [v["params"] for v in report["variants"]] == [2000, 4000, 6000]


def test_report_follows_the_contract(recipe, tmp_path):
    _, report = run(recipe, tmp_path)
    assert report["recipe"] == "r" and report["dataset"] == {"chips": ITEMS, "skipped": {"cloudy": 0}}
    assert report["teacher"] == {"metrics": {"miou": 0.5}, "seed": 1}
    assert report["variants"] == [{"name": "default", "sweep": {}, "student_depth": 2, "seed": 1, "params": 2000}]
    stage = report["stages"][3]
    assert set(stage) >= {"name", "key", "cached", "seconds", "outputs"}
    bundle = tmp_path / "r" / stage["outputs"]["bundle"]
    assert bundle.is_file() and stage["outputs"]["bundle"].startswith("stages/package-")
    assert (tmp_path / "r" / "report.md").read_text().startswith("# r: ok")
    assert list((tmp_path / "r" / "logs").glob("*.log"))


def test_until_stops_after_a_stage(recipe, tmp_path):
    _, report = run(recipe, tmp_path, "--until", "fit")
    assert [s["name"] for s in report["stages"]] == ["prepare", "fit"]


def test_a_failing_stage_leaves_no_complete_folder_and_reports_failure(recipe, tmp_path, capsys):
    code, report = run(recipe, tmp_path, pipeline=BROKEN_PIPELINE)
    assert code == 1 and report["status"] == "failed"
    assert "simulated failure" in report["error"] and "simulated failure" in capsys.readouterr().err
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "r" / "stages").glob("[!.]*")) == ["fit", "prepare"]
    assert list((tmp_path / "r" / "stages").glob(".partial-distill-*"))


def test_a_run_failing_in_its_fourth_stage_leaves_the_finished_stages_the_error_and_the_traceback(
        recipe, tmp_path, capsys):
    code, report = run(recipe, tmp_path, pipeline=BROKEN_FOURTH)
    assert code == 1 and report["status"] == "failed"
    assert [s["name"] for s in report["stages"]] == ["prepare", "fit", "distill"]
    failure = report["failure"]
    assert failure["stage"] == "package" and failure["error"] == "stage package failed: RuntimeError: simulated failure"
    log = (tmp_path / "r" / failure["log"]).read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: simulated failure" in log
    assert "stage package [default]: stage package failed" in log
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert markdown.startswith("# r: failed") and "Stopped in stage **package** (default)" in markdown
    assert f"Traceback: {failure['log']}" in markdown
    assert all(f"| {name} | default |" in markdown for name in ("prepare", "fit", "distill"))
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("simulated failure") == 1  # one line on the console


def test_library_warnings_go_to_the_log_file_and_no_line_is_printed_twice(recipe, tmp_path):
    """onnxruntime's quantiser once printed a stray root-logger warning, after which every
    line came twice (logging.warning installs a console handler on a root without one)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = KILLABLE.replace("PIPELINE", "NOISY_PIPELINE")
    result = subprocess.run([sys.executable, "-c", code, str(recipe), "--runs-dir", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "noisy: our own line" in lines and len(lines) == len(set(lines)), result.stderr
    assert "library" not in result.stderr
    (log_file,) = (tmp_path / "r" / "logs").glob("*.log")
    logged = log_file.read_text()
    assert "WARNING root: a library's warning on the root logger" in logged
    assert "RuntimeWarning: a library's RuntimeWarning" in logged
    assert logged.count("noisy: our own line") == 1


def test_ctrl_c_prints_one_line_and_the_report_says_interrupted(recipe, tmp_path):
    env = {**os.environ, "FAKE_STAGE_SLEEP": "60", "FAKE_SLOW_STAGE": "distill", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(recipe), "--runs-dir", str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "r" / "stages").glob(".partial-distill-*/started")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted; rerun to resume (finished stages stay cached)"
    assert "Traceback" not in err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["status"] == "interrupted" and [s["name"] for s in report["stages"]] == ["prepare", "fit"]
    assert report["failure"]["stage"] == "distill"
    assert (tmp_path / "r" / "report.md").read_text().startswith("# r: interrupted")
    assert "interrupted" in (tmp_path / "r" / report["failure"]["log"]).read_text()
    code, again = run(recipe, tmp_path)  # and a rerun resumes: the finished stages are cached
    assert code == 0 and [name for name, _ in ran(again)] == ["distill", "package"]


def test_a_corrupt_stage_folder_is_a_miss_with_a_warning(recipe, tmp_path, capsys):
    _, report = run(recipe, tmp_path)
    fit_dir = tmp_path / "r" / report["stages"][1]["outputs"]["model"].rsplit("/", 1)[0]
    (fit_dir / "manifest.json").write_text("{not json")
    capsys.readouterr()
    code, again = run(recipe, tmp_path)
    assert code == 0 and [name for name, _ in ran(again)] == ["fit"]
    assert "corrupt" in capsys.readouterr().err
    (fit_dir / "teacher.json").unlink()
    _, third = run(recipe, tmp_path)
    assert [s["reason"] for s in third["stages"] if not s["cached"]] == ["cache entry corrupt: output teacher.json missing"]


def test_a_second_run_on_the_same_folder_is_refused(recipe, tmp_path, capsys):
    with RunLock(tmp_path / "r"):
        assert main([str(recipe), "--runs-dir", str(tmp_path)], pipeline=PIPELINE) == 1
    assert f"{tmp_path / 'r'} is in use by another instarun (pid {os.getpid()})" in capsys.readouterr().err


def test_unknown_stage_names_are_clear_errors(recipe, tmp_path, capsys):
    assert main([str(recipe), "--runs-dir", str(tmp_path), "--until", "fitt"], pipeline=PIPELINE) == 1
    assert "--until fitt: no such stage, should be one of ['prepare', 'fit', 'distill', 'package']" in capsys.readouterr().err


KILLABLE = """
import signal
import sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (a background job)
from instageo.cli import main
from tests.fake_stages import PIPELINE
sys.exit(main(sys.argv[1:], pipeline=PIPELINE))
"""


def _outputs(runs) -> dict[str, bytes]:
    stages = runs / "r" / "stages"
    return {
        str(p.relative_to(stages)): p.read_bytes()
        for p in sorted(stages.rglob("*")) if p.is_file() and p.name != "manifest.json"
    }


def test_a_killed_run_resumes_to_the_same_results(recipe, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main([str(recipe), "--runs-dir", str(clean)], pipeline=PIPELINE) == 0

    env = {**os.environ, "FAKE_STAGE_SLEEP": "0.2", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(recipe), "--runs-dir", str(killed)], env=env)
    partial = killed / "r" / "stages"
    deadline = time.monotonic() + 60
    while len(list(partial.glob(".partial-prepare-*/item-*.json"))) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # nothing looks complete: only the partial folder of the interrupted stage exists
    assert [p.name.split("-")[0] for p in partial.iterdir()] == [".partial"]
    done_before = len(list(partial.glob(".partial-prepare-*/item-*.json")))

    code, report = run(recipe, killed)
    assert code == 0 and [name for name, _ in ran(report)] == ["prepare", "fit", "distill", "package"]
    assert _outputs(killed) == _outputs(clean)
    assert 3 <= done_before < ITEMS


def test_a_local_catalogue_key_sees_its_items_and_asset_files(tmp_path, capsys):
    """Two demo scenes have byte-identical catalog.json files; pointing the recipe at the other
    one, or replacing an asset in place, must not reuse the old search and chips."""
    import os

    from instageo.cli import main

    for name, seed in (("a", 1), ("b", 2)):
        assert main(["demo-data", str(tmp_path / name), "--seed", str(seed), "--size", "64",
                     "--acquisitions", "2", "--points", "4", "--no-quicklook"]) == 0
    assert (tmp_path / "a" / "catalog.json").read_bytes() == (tmp_path / "b" / "catalog.json").read_bytes()

    def plan(scene: str) -> dict[str, str]:
        (tmp_path / "r.yaml").write_text(
            f"name: r\ndata:\n  source: {{kind: catalog, path: {scene}/catalog.json}}\n"
            f"  observations: {{kind: points, path: a/observations.csv}}\n"
            "  chips: {size: 16, time: {tolerance_days: 20}, mask: {max_fraction: 1}}\n"
            "task: {classes: [other, water, vegetation]}\n")
        capsys.readouterr()
        assert main(["plan", str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "search"]) == 0
        line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("search"))
        return {"status": line.split()[3], "reason": line.split(None, 4)[4]}

    assert plan("a")["status"] == "run"
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "search"]) == 0
    assert plan("a")["status"] == "cached"
    other = plan("b")
    assert other["status"] == "run" and "file of data.source.path changed" in other["reason"]
    asset = sorted((tmp_path / "a").rglob("B04.tif"))[0]
    asset.write_bytes(asset.read_bytes() + b"\0")  # replaced in place: same name, other bytes
    os.utime(asset, ns=(asset.stat().st_atime_ns, asset.stat().st_mtime_ns + 1_000_000))
    assert plan("a")["status"] == "run"
