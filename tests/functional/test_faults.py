"""Fault injection on the real pipeline (every server on 127.0.0.1, every one stopped):

1. SIGKILL inside each stage, then a rerun: the same bytes as an uninterrupted run, and at no
   moment a stage folder that looks complete without being so;
2. a STAC API failing mid-pagination (500, 429 with Retry-After, a hang past the timeout, a
   connection dropped mid-body): retried to the same items, or exit 3 with one line;
3. a COG server answering 404 for one asset or cutting one answer short: another acquisition
   or a skip with a reason, never a wrong chip, and the run completes;
4. a full disk during a stage: one clear line, the completed stages untouched, nothing half
   written published, and a rerun with space finishes the job;
5. a stage's file damaged after the fact (garbage, zeros, cut short, one bit): `verify` names
   it, and the next run recomputes that stage (the manifest's checksums), not "cached".

``FAULTS`` counts what was injected and survived; with FAULTS_TABLE=path set, the module
writes the table there when it ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from instageo.runner.cache import RunStore
from tests.conftest import REPO

STAGES = ("search", "chips", "teacher", "student", "export", "predict", "viewer", "speed")

# recipes/tiny.yaml with two epochs, so a kill between epochs resumes training mid-stage
RECIPE = """\
name: tiny
seed: 0
data:
  source: {kind: demo, seed: 1, size: 128, acquisitions: 4, points: 40}
  chips:
    size: 16
    resolution: 30
    time: {steps: 2, step_days: 30, tolerance_days: 20}
  split: {method: random, val: 0.2, test: 0.2}
task: {kind: segmentation, classes: [other, water, vegetation]}
teacher:
  backbone: instageo_ci
  train: {epochs: 2, batch_size: 8, lr: 1.0e-3}
student:
  depth: 1
  train: {epochs: 2, batch_size: 8, lr: 1.0e-3}
export:
  viewer: {zoom: [11, 12]}
"""
CHIPS = "chips: {size: 16, resolution: 30, time: {steps: 2, step_days: 30, tolerance_days: 20}}"

# fault kind -> counters; "files_lost" counts baseline files missing or different afterwards
FAULTS: dict[str, Counter] = {}


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    """With FAULTS_TABLE=path set, write the table of faults injected / survived there."""
    yield
    target = os.environ.get("FAULTS_TABLE")
    if not target or not FAULTS:
        return
    columns = ["injected", "survived", "files_lost"]
    extra = sorted({k for c in FAULTS.values() for k in c} - set(columns))
    lines = ["| fault | " + " | ".join(columns + extra) + " |", "|---" * (1 + len(columns + extra)) + "|"]
    for kind, counts in FAULTS.items():
        lines.append(f"| {kind} | " + " | ".join(str(counts.get(c, "")) for c in columns + extra) + " |")
    total = Counter()
    for counts in FAULTS.values():
        total.update({c: counts[c] for c in columns})
    lines.append("| **total** | " + " | ".join(str(total[c]) for c in columns) + " |" * (1 + len(extra)))
    lines += ["", "Disk-full errors as printed:", ""] + [f"    {line}" for line in DISK_ERRORS]
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text("\n".join(lines) + "\n")


def tally(kind: str, injected: int = 1, survived: int = 1, files_lost: int = 0) -> None:
    counts = FAULTS.setdefault(kind, Counter())
    counts.update(injected=injected, survived=survived, files_lost=files_lost)


def instarun(*args, preexec_fn=None, stderr=subprocess.PIPE, wait: bool = True):
    """`instarun ARGS` in its own process (a kill, a file size limit and GDAL's caches stay
    there). Returns (exit code, stderr text), or the Popen when ``wait`` is false."""
    script = Path(sys.executable).parent / "instarun"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "instageo.cli"]
    proc = subprocess.Popen([*command, *map(str, args)], stdout=subprocess.DEVNULL, stderr=stderr,
                            text=True, preexec_fn=preexec_fn)
    if not wait:
        return proc
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "Logging error" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error")]


# --- what a run folder holds ----------------------------------------------------------------

TIMINGS = {"seconds", "started", "speed", "mtime_ns"}  # wall-clock fields of manifests


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def stage_files(run_dir: Path, complete_only: bool = True) -> dict[str, str]:
    """stage folder/relative path -> SHA-256 of every file of every complete stage folder;
    manifests without their timings."""
    found = {}
    for folder in sorted((run_dir / "stages").iterdir()):
        if complete_only and folder.name.startswith("."):
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            name = f"{folder.name}/{path.relative_to(folder)}"
            if path.name == "manifest.json" and path.parent == folder:
                found[name] = json.dumps(untimed(json.loads(path.read_text())), sort_keys=True)
            else:
                found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_nothing_looks_complete_that_is_not(run_dir: Path, baseline: dict[str, str]) -> list[str]:
    """Every stage folder without a leading dot is complete: the cache's own lookup accepts
    it, and it holds exactly the baseline's files with the baseline's bytes. Returns the
    complete stages."""
    stages = run_dir / "stages"
    if not stages.exists():
        return []
    store, complete = RunStore(run_dir), []
    files = stage_files(run_dir)
    for folder in sorted(stages.iterdir()):
        if folder.name.startswith("."):  # .partial-* / .trash-*: never read as complete
            assert folder.name.startswith((".partial-", ".trash-")), folder
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        found, why = store.lookup(manifest["stage"], manifest["key"])
        assert found is not None and why is None, f"{folder.name}: {why}"
        assert folder.name == f"{manifest['stage']}-{manifest['key'][:12]}"
        mine = {k: v for k, v in files.items() if k.startswith(folder.name + "/")}
        theirs = {k: v for k, v in baseline.items() if k.startswith(folder.name + "/")}
        assert mine == theirs, f"{folder.name} differs from the uninterrupted run"
        complete.append(manifest["stage"])
    return complete


def lost(run_dir: Path, baseline: dict[str, str]) -> int:
    files = stage_files(run_dir)
    return sum(files.get(name) != digest for name, digest in baseline.items())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted run of the recipe, in its own process like the runs it is compared to."""
    folder = tmp_path_factory.mktemp("baseline")
    (folder / "tiny.yaml").write_text(RECIPE)
    code, err = instarun(folder / "tiny.yaml", "--runs-dir", folder / "runs")
    assert code == 0, err
    # no terminal here: a line per epoch with its loss and validation score, nothing twice
    assert err.count("epoch 2/2: loss ") == 2 and len(set(err.splitlines())) == len(err.splitlines()), err
    run_dir = folder / "runs" / "tiny"
    return folder, run_dir, stage_files(run_dir)


# --- 1. SIGKILL in every stage --------------------------------------------------------------

# what shows a stage under way with some of its work done, in its partial folder
TRIGGERS = {
    "search": ("scene/hls-demo/*/*.tif", 3),  # the demo scene half written
    "chips": ("records/*.json", 5),  # some chips built (each leaves a record)
    "teacher": ("train_state.pt", 1),  # the first of two epochs checkpointed
    "student": ("train_state.pt", 1),
    "export": ("bundle/model.onnx", 1),  # exported, parity and timing under way
    "predict": (None, 0),  # started: it writes its files at the end
    "viewer": ("viewer/tiles/*/*/*/*.png", 1),  # some tiles written
    "speed": (None, 0),  # started: it writes no files
}


def kill_inside(recipe: Path, runs: Path, stage: str, log: Path) -> dict:
    """Start a run, SIGKILL it as soon as ``stage`` shows the work of its trigger, and say
    what was on disk."""
    pattern, count = TRIGGERS[stage]
    stages = runs / "tiny" / "stages"
    with open(log, "w") as err:
        proc = instarun(recipe, "--runs-dir", runs, stderr=err, wait=False)
        try:
            deadline = time.monotonic() + 240
            while True:
                partial = list(stages.glob(f".partial-{stage}-*")) if stages.exists() else []
                if partial and (pattern is None or len(list(partial[0].glob(pattern))) >= count):
                    break
                assert proc.poll() is None, f"the run ended before {stage} got under way:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"{stage} never got under way"
                time.sleep(0.004)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not list(stages.glob(f"{stage}-*")), f"the kill landed after {stage} had finished"
    return {"records": {p.name: (p.stat().st_mtime_ns, p.read_bytes())
                        for p in partial[0].glob("records/*.json")}}


def test_a_kill_inside_every_stage_resumes_to_the_same_bytes(baseline, tmp_path):
    _, base_dir, base_files = baseline
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    runs = tmp_path / "runs"
    run_dir = runs / "tiny"
    before: dict = {}
    for index, stage in enumerate(STAGES):
        log = tmp_path / f"kill-{stage}.log"
        before[stage] = kill_inside(recipe, runs, stage, log)
        complete = assert_nothing_looks_complete_that_is_not(run_dir, base_files)
        assert complete == sorted(STAGES[:index]), f"killed in {stage}: complete {complete}"
        if index:  # this run resumed the stage the previous one was killed in
            resumed = STAGES[index - 1]
            if resumed in ("teacher", "student"):
                assert "resuming training at epoch 2" in log.read_text(), log.read_text()
    code, err = instarun(recipe, "--runs-dir", runs)
    assert code == 0, err
    assert "resuming training" not in err  # the viewer had no epochs; nothing else to resume
    assert not [p.name for p in (run_dir / "stages").iterdir() if p.name.startswith(".")]
    assert assert_nothing_looks_complete_that_is_not(run_dir, base_files) == sorted(STAGES)
    assert stage_files(run_dir) == base_files
    tally("SIGKILL inside a stage (one per stage)", len(STAGES), len(STAGES), lost(run_dir, base_files))
    FAULTS["SIGKILL inside a stage (one per stage)"].update(files_compared=len(base_files))
    # chips finished before the kill were kept as they were, not built again
    chips = next((run_dir / "stages").glob("chips-*")) / "records"
    kept = before["chips"]["records"]
    assert kept and all((chips / name).stat().st_mtime_ns == stamp and (chips / name).read_bytes() == data
                        for name, (stamp, data) in kept.items())
    assert (tmp_path / "tiny.lock.json").read_bytes() == (base_dir.parent.parent / "tiny.lock.json").read_bytes()
    assert os.readlink(run_dir / "viewer") == os.readlink(base_dir / "viewer")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "ok" and [s["cached"] for s in report["stages"]] == [True] * (len(STAGES) - 1) + [False]


# --- 2. a STAC API failing mid-pagination ---------------------------------------------------

@pytest.fixture(scope="module")
def stac_scene(tmp_path_factory, pgstac):
    """A demo scene's items in pgstac (a collection of their own), searched through a fault
    proxy that asks for pages of one item, so every search pages."""
    from instageo.data import demo
    from instageo.data.catalogue import LocalCatalogue
    from tests.servers import FaultProxy

    folder = tmp_path_factory.mktemp("stac")
    scene = demo.generate(folder / "scene", seed=5, size=96, acquisitions=6, points=30)
    items = [{**item, "collection": "hls-faults"} for item in LocalCatalogue(scene.catalog).items]
    collection = json.loads((scene.catalog.parent / demo.COLLECTION / "collection.json").read_text())
    pgstac.load([{**collection, "id": "hls-faults", "links": []}], items)
    shutil.copy(scene.observations, folder / "obs.csv")
    with FaultProxy(pgstac.url) as proxy:
        proxy.page_limit = 1
        yield folder, proxy


def stac_search(folder: Path, proxy, name: str, extra: str = "", capsys=None) -> tuple[int, float, str]:
    from instageo.cli import main

    recipe = folder / f"{name}.yaml"
    recipe.write_text(
        f"name: {name}\ndata:\n  source: {{kind: stac, url: '{proxy.url}', collections: [hls-faults], "
        f"preset: hls{extra}}}\n  observations: {{kind: points, path: obs.csv}}\n  {CHIPS}\n"
        "task: {classes: [other, water, vegetation]}\n")
    (folder / f"{name}.lock.json").unlink(missing_ok=True)
    proxy.log.clear()
    if capsys is not None:
        capsys.readouterr()
    started = time.monotonic()
    code = main([str(recipe), "--runs-dir", str(folder / "runs"), "--until", "search"])
    return code, time.monotonic() - started, capsys.readouterr().err if capsys is not None else ""


def search_outputs(folder: Path, name: str) -> dict[str, bytes]:
    stage = next((folder / "runs" / name / "stages").glob("search-*"))
    return {f: (stage / f).read_bytes() for f in ("items.json", "candidates.json", "stac_items.json")}


@pytest.fixture(scope="module")
def clean_search(stac_scene):
    folder, proxy = stac_scene
    proxy.faults, proxy.only = [], None
    assert stac_search(folder, proxy, "clean")[0] == 0
    pages = [entry for entry in proxy.log if entry[1] == "POST" and entry[2].endswith("/search")]
    assert len(pages) >= 3  # it did page
    return search_outputs(folder, "clean")


PAGE_FAULTS = {
    "500": [500],
    "429-retry-after": [(429, {"Retry-After": "1"})],
    "hang-past-timeout": ["hang"],
    "drop-mid-body": ["truncate"],
    "drop-before-answer": ["drop"],
    # one after the other, each on its own page (None: the page goes through)
    "all-of-them": [500, None, "truncate", None, (429, {"Retry-After": "1"}), None, "hang", None, "drop"],
}


@pytest.mark.parametrize("kind", PAGE_FAULTS)
def test_stac_faults_mid_pagination_are_retried_to_the_same_items(stac_scene, clean_search, kind):
    folder, proxy = stac_scene
    proxy.only, proxy.hang_seconds = "token", 8.0  # faults hit the pages after the first
    proxy.faults = list(PAGE_FAULTS[kind])
    code, seconds, _ = stac_search(folder, proxy, f"page-{kind}", ", timeout: 1, retries: 6")
    injected = sum(fault is not None for fault in PAGE_FAULTS[kind])
    assert code == 0 and proxy.faults == []
    assert search_outputs(folder, f"page-{kind}") == clean_search
    for index, (when, _, _, action) in enumerate(proxy.log):  # the request after each fault
        wait = proxy.log[index + 1][0] - when if index + 1 < len(proxy.log) else None
        if action == "hang":
            assert 0.9 <= wait < proxy.hang_seconds / 2  # the 1 s timeout cut the hang short
        elif isinstance(action, tuple):
            assert wait >= 0.9  # Retry-After honoured
    assert seconds < 8
    tally("STAC fault mid-pagination (retried)", injected, injected)


@pytest.mark.parametrize("fault", [500, "truncate", "hang"], ids=str)
def test_a_catalogue_failing_on_every_page_exits_3_with_one_line(stac_scene, fault, capsys):
    folder, proxy = stac_scene
    proxy.only, proxy.hang_seconds = "token", 3.0
    proxy.faults = [fault] * 20
    code, _, err = stac_search(folder, proxy, f"dead-{fault}", ", timeout: 1, retries: 1", capsys)
    errors = error_lines(err)
    assert code == 3 and len(errors) == 1, err
    assert errors[0].startswith(f"error: catalogue {proxy.url} is unreachable")
    assert not list((folder / "runs" / f"dead-{fault}" / "stages").glob("search-*"))  # nothing published
    faulted = 20 - len(proxy.faults)  # each retried, then given up on cleanly
    tally("STAC fault on every page (retried, then exit 3 in one line)", faulted, faulted)


# --- 3. a COG server answering 404 or cutting an answer short -------------------------------

def chip_records(run_dir: Path) -> dict[str, dict]:
    stage = next((run_dir / "stages").glob("chips-*"))
    return {p.stem: json.loads(p.read_text()) for p in sorted((stage / "records").glob("*.json"))}


@pytest.fixture(scope="module")
def cog_scene(baseline, tmp_path_factory):
    """The baseline's demo scene served over HTTP, as a static catalogue whose hrefs point at
    the file server; the acquisition most chips use is the victim. Also the chips built
    from the same catalogue without the victim (what "another acquisition" must give)."""
    from instageo.cli import main
    from tests.servers import RangeFileServer

    _, base_dir, _ = baseline
    folder = tmp_path_factory.mktemp("cog")
    shutil.copytree(next((base_dir / "stages").glob("search-*")) / "scene", folder / "scene")
    base = chip_records(base_dir)
    victim = Counter(i for r in base.values() for i in r["items"]).most_common(1)[0][0]
    def recipe(name: str, catalog: str) -> str:
        return (f"name: {name}\ndata:\n  source: {{kind: catalog, path: {catalog}}}\n"
                f"  observations: {{kind: points, path: scene/observations.csv}}\n  {CHIPS}\n"
                "task: {classes: [other, water, vegetation]}\n")

    # the reference: the catalogue without the victim, read from disk
    shutil.copytree(folder / "scene", folder / "ref")
    shutil.rmtree(folder / "ref" / "hls-demo" / victim)
    collection = json.loads((folder / "ref" / "hls-demo" / "collection.json").read_text())
    collection["links"] = [link for link in collection["links"] if victim not in link["href"]]
    (folder / "ref" / "hls-demo" / "collection.json").write_text(json.dumps(collection))
    (folder / "ref.yaml").write_text(recipe("ref", "ref/catalog.json"))
    assert main([str(folder / "ref.yaml"), "--runs-dir", str(folder / "runs"), "--until", "chips"]) == 0
    with RangeFileServer(folder / "scene") as files:
        for item_json in (folder / "scene" / "hls-demo").glob("*/*.json"):
            item = json.loads(item_json.read_text())
            for key, asset in item["assets"].items():
                asset["href"] = f"{files.url}/hls-demo/{item['id']}/{Path(asset['href']).name}"
            item_json.write_text(json.dumps(item))
        (folder / "http.yaml").write_text(recipe("http", "scene/catalog.json"))
        yield folder, files, victim, base, chip_records(folder / "runs" / "ref")


def test_chips_over_http_are_the_local_chips_with_a_chips_reads_in_flight_together(cog_scene):
    """One chip at a time (one worker), yet the file server answers several reads at once:
    a chip's masks, then its bands, are read ahead together (they used to wait one round
    trip after another). The chips are byte for byte those read from disk."""
    folder, files, _, base, _ = cog_scene
    files.fault()
    files.reset(0.02)
    runs = folder / "runs-clean"
    (folder / "http.lock.json").unlink(missing_ok=True)
    code, err = instarun(folder / "http.yaml", "--runs-dir", runs, "--until", "chips",
                         "--set", "data.executor={kind: local, workers: 1}")
    in_flight = files.stats()["most_in_flight"]
    files.reset(0.0)
    assert code == 0 and not error_lines(err), err
    records = chip_records(runs / "http")
    assert {c: (r["status"], r["items"], r["image_sha256"]) for c, r in records.items()} == \
        {c: (r["status"], r["items"], r["image_sha256"]) for c, r in base.items()}
    assert in_flight >= 3, in_flight  # 1 when every read waited for the one before


@pytest.mark.parametrize("fault", [("404",), ("truncate", "ok")], ids=["404", "truncated-once"])
def test_a_cog_404_or_cut_answer_never_makes_a_wrong_chip(cog_scene, fault):
    folder, files, victim, base, reference = cog_scene
    files.fault()
    files.fault(f"/hls-demo/{victim}/B04.tif", *fault)
    runs = folder / f"runs-{fault[0]}"
    (folder / "http.lock.json").unlink(missing_ok=True)
    code, err = instarun(folder / "http.yaml", "--runs-dir", runs, "--until", "chips")
    hits = files.fault()["hits"]
    assert code == 0 and not error_lines(err), err
    assert hits and all(fault[0] in hit for hit in hits)
    records = chip_records(runs / "http")
    assert records.keys() == base.keys()
    moved = skipped = 0
    for chip, record in records.items():
        same_as = [r for r in (base[chip], reference[chip]) if r["items"] == record["items"]]
        if record["status"] == "ok":  # byte for byte a chip of the acquisitions it names
            assert same_as and record["image_sha256"] == same_as[0]["image_sha256"], chip
            assert record["label_sha256"] == same_as[0]["label_sha256"], chip
            if fault == ("404",):
                assert victim not in record["items"]
            moved += victim in base[chip]["items"] and victim not in record["items"]
        elif record["reason"] == "unreadable":
            assert record["unreadable"] == [victim]
            skipped += 1
        else:
            assert record["reason"] in (base[chip]["reason"], reference[chip]["reason"]), chip
        if victim not in record["items"] and victim in base[chip]["items"]:
            assert record["status"] == "ok" or record["reason"] == "unreadable"
            assert record["unreadable"] == [victim]
    assert moved > 0  # another acquisition was chosen where there was one
    affected = sum(victim in r["items"] for r in base.values())
    tally(f"COG {fault[0]} on one asset (chip moved or skipped)", 1, 1)
    FAULTS[f"COG {fault[0]} on one asset (chip moved or skipped)"].update(
        chips_affected=affected, chips_moved=moved, chips_skipped=skipped)


# --- 4. a full disk during a stage ----------------------------------------------------------

def copy_stages(base_dir: Path, run_dir: Path, names: tuple[str, ...]) -> None:
    """The baseline's completed ``names`` stages, as an earlier run would have left them."""
    for name in names:
        source = next((base_dir / "stages").glob(f"{name}-*"))
        shutil.copytree(source, run_dir / "stages" / source.name)


@pytest.fixture
def tmpfs(tmp_path):
    """An 8 MiB tmpfs (root only; skipped where it cannot be mounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("no tmpfs here (needs root); the file size limit case covers a full disk")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount: Path, leave: int, name: str = "filler") -> Path:
    """Fill the file system of ``mount`` but for about ``leave`` bytes."""
    filler = mount / name
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def limit_file_size(limit: int):
    def preexec():  # writes past the limit fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def check_disk_full(code: int, err: str, run_dir: Path, base_files: dict, kept: tuple[str, ...],
                    failed: str | None, before: dict) -> None:
    errors = error_lines(err)
    assert code == 1 and len(errors) == 1, err
    assert errors[0].startswith("error: " + (f"stage {failed}: " if failed else "")), errors[0]
    assert "no room to write" in errors[0] and "already finished are kept" in errors[0], errors[0]
    assert assert_nothing_looks_complete_that_is_not(run_dir, base_files) == sorted(kept)
    assert stage_files(run_dir) == before  # the completed stages untouched, byte for byte
    if failed:
        assert not list((run_dir / "stages").glob(f"{failed}-*"))
    DISK_ERRORS.append(errors[0])


DISK_ERRORS: list[str] = []


@pytest.mark.parametrize("stage, leave", [("chips", 200_000), ("predict", 60_000)])
def test_a_full_disk_during_a_stage_is_one_line_and_the_cache_untouched(baseline, tmpfs, tmp_path, stage, leave):
    base_root, base_dir, base_files = baseline
    (tmp_path / "tiny.yaml").write_text(RECIPE)
    shutil.copy(base_root / "tiny.lock.json", tmp_path / "tiny.lock.json")
    run_dir = tmpfs / "runs" / "tiny"
    done = STAGES[:STAGES.index(stage)]
    copy_stages(base_dir, run_dir, done)
    before = stage_files(run_dir)
    filler = fill(tmpfs, leave)  # less than the stage writes
    run = (tmp_path / "tiny.yaml", "--runs-dir", tmpfs / "runs", "--until", stage)
    code, err = instarun(*run)
    check_disk_full(code, err, run_dir, base_files, done, stage, before)
    injected = 1
    if stage == "chips":  # full to the last page: the run's own files (lock, log, report) fail too
        partial = stage_files(run_dir, complete_only=False)
        more = fill(tmpfs, 4096, "filler-2")
        code, err = instarun(*run)
        check_disk_full(code, err, run_dir, base_files, done, None, before)
        assert stage_files(run_dir, complete_only=False) == partial
        more.unlink()
        injected += 1
    filler.unlink()
    code, err = instarun(*run)
    assert code == 0, err
    assert assert_nothing_looks_complete_that_is_not(run_dir, base_files) == sorted(done + (stage,))
    expected = {k: v for k, v in base_files.items() if k.split("-")[0] in done + (stage,)}
    tally(f"disk full (tmpfs) in {stage}" + (", then before any stage" if injected > 1 else ""),
          injected, injected, lost(run_dir, expected))


def test_a_file_size_limit_during_training_is_one_line_and_the_cache_untouched(baseline, tmp_path):
    base_root, base_dir, base_files = baseline
    (tmp_path / "tiny.yaml").write_text(RECIPE)
    shutil.copy(base_root / "tiny.lock.json", tmp_path / "tiny.lock.json")
    run_dir = tmp_path / "runs" / "tiny"
    copy_stages(base_dir, run_dir, ("search", "chips"))
    before = stage_files(run_dir)
    code, err = instarun(tmp_path / "tiny.yaml", "--runs-dir", tmp_path / "runs", "--until", "teacher",
                         preexec_fn=limit_file_size(256 << 10))  # the checkpoints are over 1 MB
    check_disk_full(code, err, run_dir, base_files, ("chips", "search"), "teacher", before)
    code, err = instarun(tmp_path / "tiny.yaml", "--runs-dir", tmp_path / "runs", "--until", "teacher")
    assert code == 0, err
    assert assert_nothing_looks_complete_that_is_not(run_dir, base_files) == ["chips", "search", "teacher"]
    tally("file too large (RLIMIT_FSIZE) in teacher", 1, 1, lost(run_dir, {
        k: v for k, v in base_files.items() if k.startswith(("search-", "chips-", "teacher-"))}))


def test_no_signed_url_secret_reaches_a_log_a_report_or_the_console(tmp_path, capsys):
    """Every asset href of a catalogue signed like Planetary Computer's, on a port nobody
    listens on: the reads fail (GDAL quotes the URL), and no signature survives anywhere."""
    import re
    import socket

    from instageo.cli import main
    from instageo.data import demo

    scene = demo.generate(tmp_path / "scene", seed=1, size=64, acquisitions=2, points=4)
    with socket.socket() as probe:  # a free loopback port, closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "sv=2021-06-08&st=2026-12-01T10%3A00Z&se=2026-12-02&sr=c&sp=rl&sig=SeCrEtSiGnAtUrE%3D"
    for item in (tmp_path / "scene").rglob("HLS.demo.*.json"):
        document = json.loads(item.read_text())
        for asset in document["assets"].values():
            asset["href"] = f"http://127.0.0.1:{port}/{Path(asset['href']).name}?{secret}"
        item.write_text(json.dumps(document))
    (tmp_path / "r.yaml").write_text(
        f"name: r\ndata:\n  source: {{kind: catalog, path: {scene.catalog}}}\n"
        f"  observations: {{kind: points, path: {scene.observations}}}\n"
        "  chips: {size: 16, time: {tolerance_days: 20}}\ntask: {classes: [other, water, vegetation]}\n")
    code = main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"])
    captured = capsys.readouterr()
    assert code == 2  # every chip unreadable
    texts = {"stderr": captured.err, "stdout": captured.out}
    # items.json / stac_items.json keep the catalogue's own hrefs (here pre-signed by the user;
    # real Planetary Computer hrefs are signed only when read): everything else is the run's
    texts.update({str(p): p.read_text(errors="replace") for p in (tmp_path / "runs").rglob("*")
                  if p.is_file() and p.suffix in (".log", ".json", ".md", ".csv")
                  and p.name not in ("items.json", "stac_items.json")})
    assert any(f"127.0.0.1:{port}" in text for text in texts.values())  # the failures were logged
    leaks = {name for name, text in texts.items() if re.search(r"(?i)[?&]sig=(?!REDACTED)", text)
             or "SeCrEtSiGnAtUrE" in text}
    assert not leaks, leaks


def test_a_write_refused_by_the_system_is_one_line_and_the_cleanup_masks_nothing(tmp_path, capsys, monkeypatch):
    """A read-only place (as root, permission bits do not stop writes: the refusal is forced
    at the rename), with a clean-up that fails too: the user sees the write's own error."""
    import errno
    import os

    from instageo import files
    from instageo.cli import main

    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    real_replace, real_unlink = os.replace, Path.unlink

    def refuse(source, target):
        raise PermissionError(errno.EROFS, "Read-only file system", str(target))

    def unlink(self, missing_ok=False):
        if ".tmp-" in self.name:
            raise PermissionError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(files.os, "replace", refuse)
    monkeypatch.setattr(Path, "unlink", unlink)
    code = main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "search"])
    err = capsys.readouterr().err
    monkeypatch.setattr(files.os, "replace", real_replace)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "cannot write " in lines[0] and "Read-only file system" in lines[0]


def test_temporaries_a_killed_run_left_beside_the_recipe_are_removed_by_the_next(tmp_path):
    from instageo.cli import main

    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    (tmp_path / ".tiny.lock.json.tmp-4242").write_text("half a lock")
    (tmp_path / "notes.tmp-4242").write_text("the user's own file")  # not ours: kept
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / ".report.json.tmp-4242").write_text("half a report")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "search"]) == 0
    assert not (tmp_path / ".tiny.lock.json.tmp-4242").exists()
    assert not (tmp_path / "runs" / "tiny" / ".report.json.tmp-4242").exists()
    assert (tmp_path / "notes.tmp-4242").exists()


# --- 5. damaged cache files -----------------------------------------------------------------

# a stage's file -> what is done to it: another file's bytes, zeros, cut short, one bit flipped
DAMAGE = {
    "search": ("items.json", "garbage"),
    "chips": ("index.csv", "zeros"),
    "teacher": ("teacher.pt", "truncated"),
    "export": ("bundle/model.onnx", "bit"),
}


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "garbage":
        data = os.urandom(len(data))
    elif how == "zeros":
        data = bytes(len(data))
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        data = data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]
    stamp = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))


def test_a_damaged_cache_file_is_named_by_verify_and_recomputed_by_the_next_run(baseline, tmp_path):
    """Garbage, zeros, half a file and one flipped bit in four stages' outputs: each was
    reported "cached", and the next stage failed with a decoding error."""
    base_root, base_dir, base_files = baseline
    (tmp_path / "tiny.yaml").write_text(RECIPE)
    shutil.copy(base_root / "tiny.lock.json", tmp_path / "tiny.lock.json")
    run_dir = tmp_path / "runs" / "tiny"
    copy_stages(base_dir, run_dir, STAGES)
    folders = {stage: next((run_dir / "stages").glob(f"{stage}-*")) for stage in DAMAGE}
    for stage, (name, how) in DAMAGE.items():
        damage(folders[stage] / name, how)
    verify = subprocess.run([sys.executable, "-m", "instageo.cli", "verify", tmp_path / "tiny.yaml",
                             "--runs-dir", tmp_path / "runs"], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 1, verify.stderr
    assert f"{len(STAGES) - len(DAMAGE)} of {len(STAGES)} stage folder(s) intact" in verify.stdout, verify.stdout
    for stage, folder in folders.items():
        assert f"damaged: {folder}: output {DAMAGE[stage][0]} changed" in verify.stdout, verify.stdout
    code, err = instarun(tmp_path / "tiny.yaml", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    for stage, (name, _) in DAMAGE.items():
        assert f"output {name} " in err, err  # the warning names the file
    report = json.loads((run_dir / "report.json").read_text())
    ran = {s["name"] for s in report["stages"] if not s["cached"]}
    assert ran == set(DAMAGE), ran
    assert assert_nothing_looks_complete_that_is_not(run_dir, base_files) == sorted(STAGES)
    tally("damaged cache file (garbage, zeros, truncated, one bit)", len(DAMAGE), len(DAMAGE),
          lost(run_dir, base_files))


@pytest.mark.parametrize("place", ["runs folder", "recipe folder"])
def test_a_read_only_file_system_is_one_line_naming_the_path(tmpfs, tmp_path, place):
    """A real read-only mount (EROFS): the runs folder on it, or the recipe (whose lock is
    written beside it). Was a traceback, or the clean-up's error instead of the write's."""
    recipe_dir = tmpfs if place == "recipe folder" else tmp_path
    shutil.copy(REPO / "recipes" / "tiny.yaml", recipe_dir / "tiny.yaml")
    runs = tmpfs / "runs" if place == "runs folder" else tmp_path / "runs"
    if place == "runs folder":
        runs.mkdir()
    assert subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True).returncode == 0
    try:
        code, err = instarun(recipe_dir / "tiny.yaml", "--runs-dir", runs, "--until", "search")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], capture_output=True)
    lines = error_lines(err)
    assert code != 0 and len(lines) == 1 and "Read-only file system" in lines[0], err
    named = tmpfs / "tiny.lock.json" if place == "recipe folder" else runs / "tiny"
    assert f"cannot write {named}: " in lines[0], lines[0]  # the file itself, not a temporary
    tally(f"read-only {place} (EROFS mount)", 1, 1, 0)
