"""The CLI as users run it: the installed `instarun` script in a subprocess."""

import shutil
import subprocess
import sys
from pathlib import Path

from instageo.cli import main as instageo_main
from tests.conftest import REPO

INSTARUN = str(Path(sys.executable).parent / "instarun")


def instarun(*args, cwd=REPO):
    return subprocess.run([INSTARUN, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_validate_reports_every_problem_with_exit_2_and_no_traceback(write_recipe):
    path = write_recipe("""
        name: r
        data:
          source: {kind: demo}
          chips: {size: -1, time: {stepz: 2}}
        student: {depth: two}
        """)
    result = instarun("validate", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:4: data.chips.size: should be greater than or equal to 8, got -1",
        f"{path}:4: data.chips.time.stepz: unknown field 'stepz'; did you mean 'steps'?",
        f"{path}:5: student.depth: should be a valid integer, unable to parse string as an integer, got 'two'",
    ]
    assert "Traceback" not in result.stderr


def test_validate_ok_lists_variants():
    result = instarun("validate", "recipes/demo.yaml", "--set", "student.depth=1,2,3")
    assert result.returncode == 0
    assert result.stdout.strip() == (
        "recipes/demo.yaml: ok (demo, 3 variant(s): student.depth=1, student.depth=2, student.depth=3)"
    )


def test_schema_command_prints_the_committed_schemas():
    for of in ("recipe", "report", "bundle"):
        result = instarun("schema", of)
        assert result.returncode == 0 and result.stdout == (REPO / "schemas" / f"{of}.schema.json").read_text(), \
            f"schemas/{of}.schema.json is stale: run `make schema`"
    assert instarun("schema").stdout == (REPO / "schemas" / "recipe.schema.json").read_text()


def test_help_and_validate_do_not_import_heavy_libraries():
    probe = (
        "import sys; from instageo.cli import main; "
        "main(['validate', 'recipes/tiny.yaml']); main(['--help']); "
        "heavy = [m for m in ('torch', 'rasterio', 'onnxruntime', 'timm') if m in sys.modules]; "
        "print('heavy:', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip().endswith("heavy: []")
    assert "Usage: instarun" in result.stdout


def test_a_cached_rerun_loads_neither_torch_nor_matplotlib(tmp_path):
    """Everything cached: the rerun checks manifests and rewrites the report, no more."""
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    run = [str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]
    assert instageo_main(run) == 0
    probe = (
        f"import sys; from instageo.cli import main; code = main({run!r}); "
        "heavy = [m for m in ('torch', 'onnxruntime', 'timm', 'matplotlib') if m in sys.modules]; "
        "print('exit', code, 'heavy:', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip().endswith("exit 0 heavy: []"), result.stdout + result.stderr
    assert "0 stage(s) run, 9 cached" in result.stderr + result.stdout


def test_unknown_option_is_a_usage_error():
    result = instarun("recipes/tiny.yaml", "--frobnicate")
    assert result.returncode == 2 and "No such option" in result.stderr


def test_a_mistyped_command_names_the_close_one():
    result = instarun("plna", "recipes/tiny.yaml")
    assert result.returncode == 2 and "no such command 'plna'; did you mean 'plan'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_works_anywhere_on_the_line(write_recipe):
    bad = write_recipe("name: r\ndata:\n  source: {kind: demo}\n")
    for line in (["--debug", "plan", str(bad), "--force", "nope"], ["plan", str(bad), "--force", "nope", "--debug"],
                 [str(bad), "--debug", "--force", "nope"]):
        result = instarun(*line)
        assert result.returncode == 2 and "--force nope: no such stage" in result.stderr, line
        assert "Traceback (most recent call last)" in result.stderr, line  # --debug shows it
    assert "Traceback" not in instarun("plan", str(bad), "--force", "nope").stderr


def test_plan_estimate_counts_what_the_run_then_does(tmp_path):
    """`plan --estimate` before a run: its counts against the run's own (tiles exactly, chips at
    most one per observation), times for the stages that train and predict, and the search
    stage it ran is the one the run reuses."""
    import json
    import re

    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    planned = subprocess.run([INSTARUN, "plan", "tiny.yaml", "--runs-dir", "runs", "--estimate"], capture_output=True,
                             text=True, cwd=tmp_path, timeout=300)
    assert planned.returncode == 0, planned.stderr
    text = planned.stdout
    assert "from the search stage, run now (cached for the run)" in text
    items, observations = map(int, re.search(r"search: (\d+) items, (\d+) observations", text).groups())
    chips = int(re.search(r"chips: at most (\d+) chips", text)[1])
    tiles = int(re.search(r"predict: ([\d,]+) tiles", text)[1].replace(",", ""))
    assert re.search(r"teacher: .* -> ~[\d.]+ s", text) and re.search(r"student: .* -> ~[\d.]+ s", text)
    assert re.search(r"reads at most [\d.,]+ (KiB|MiB|GiB)", text)
    assert instageo_main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 0
    report = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())
    assert next(s for s in report["stages"] if s["name"] == "search")["cached"]
    assert observations == chips and report["dataset"]["chips"] <= chips and items == report["dataset"]["search"]["items"]
    assert tiles == report["variants"][0]["prediction_area"]["tiles"]
