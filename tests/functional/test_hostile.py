"""`instarun serve` driven by generated requests (hypothesis) over real HTTP on 127.0.0.1:
paths under /files, job bodies, query strings and tile addresses. Whatever is asked, no
answer is a 500, every refusal has the app's error shape, no byte comes from a file the map
does not show, and no job leaves a folder behind but a finished one's.

INSTAGEO_HOSTILE_EXAMPLES sets the examples per test (a few hundred in `make test`, 2,000 in
`make bench`, bench/hostile.py); INSTAGEO_HOSTILE_COUNTS names a JSON file the counts of
requests sent and answers by status are added to.
"""

import hashlib
import http.client
import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instageo.deploy.run_files import servable
from tests.conftest import run_tiny
from tests.servers import free_port

EXAMPLES = int(os.environ.get("INSTAGEO_HOSTILE_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
COUNTS: Counter = Counter()
SCENE = (39.9, 1.41, 39.935, 1.445)  # tiny.yaml's demo scene, roughly


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """tiny.yaml's finished run, served with a small tile budget (a generated job that is
    accepted runs in a second), and the names a hostile path would aim at."""
    run_dir = run_tiny(tmp_path_factory.mktemp("hostile"))[0].resolve()
    (run_dir / "outside-link").symlink_to("/etc/hostname")
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).parent / "instarun"), "serve", str(run_dir), "--port",
                                str(port), "--max-tiles", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while request(port, "GET", "/api/run")[0] != 200:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        names = sorted({p.name for p in run_dir.rglob("*")} | {p.name for p in run_dir.glob("stages/*")})
        files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
        yield {"port": port, "run_dir": run_dir, "names": names, "files": files, "jobs": []}
    finally:
        process.terminate()
        process.wait(10)
        if os.environ.get("INSTAGEO_HOSTILE_COUNTS"):
            path = Path(os.environ["INSTAGEO_HOSTILE_COUNTS"])
            known = Counter(json.loads(path.read_text())) if path.exists() else Counter()
            path.write_text(json.dumps(dict(known + COUNTS), sort_keys=True))


def request(port: int, method: str, target: str, body: bytes | None = None,
            kind: str = "application/json") -> tuple[int, bytes]:
    """One request with ``target`` sent as it is (no normalising by a client library)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        if body is not None:
            connection.putheader("Content-Type", kind)
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        return answer.status, answer.read()
    except OSError:
        return 0, b""  # refused at the connection: not an answer
    finally:
        connection.close()


def check_answer(status: int, body: bytes, what: str, surface: str) -> None:
    """No 500 and no dropped connection; every refusal is the one error shape, one line."""
    COUNTS[f"{surface}: requests"] += 1
    COUNTS[f"{surface}: status {status}"] += 1
    assert status != 500 and status != 0, (what, status, body[:300])
    if status >= 400:
        answer = json.loads(body)
        assert set(answer) == {"error", "field"} and isinstance(answer["error"], str), (what, answer)
        assert "\n" not in answer["error"] and "Traceback" not in answer["error"], (what, answer)


def servable_digests(run_dir: Path) -> set[str]:
    """The sha256 of every run file the map may show (what /files may answer with)."""
    found = set()
    for path in run_dir.rglob("*"):
        if path.is_file() and not path.is_symlink() and servable(path.relative_to(run_dir).as_posix()):
            found.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def encoded(text: str) -> str:
    return urllib.parse.quote(text, safe="%/.-_~")


TRAVERSAL = ["..", ".", "%2e%2e", "%2E%2e", "..%2f", "%2f", "%5c..", "%00", "", "%252e%252e", "~", "stages",
             "viewer", "app", "logs", "bundle", "..%2f..%2f..%2fetc%2fpasswd", "%2fetc%2fpasswd"]


@st.composite
def file_paths(draw, names):
    parts = draw(st.lists(st.one_of(st.sampled_from(TRAVERSAL), st.sampled_from(names),
                                    st.text(max_size=6).map(encoded)), max_size=8))
    return "/files/" + "/".join(parts)


def disguised(part: str, how: str) -> str:
    """One path segment as a hostile client might spell it."""
    return {"plain": part, "encoded": "".join(f"%{b:02X}" for b in part.encode()), "detour": f"{part}/../{part}",
            "dot": f"./{part}", "up": f"x/../{part}", "slash": f"{part}%2f"}[how]


@st.composite
def run_file_paths(draw, files):
    """A real file of the run (weights and lock files included), its segments disguised, or
    reached from a servable folder by a climb."""
    parts = draw(st.sampled_from(files)).split("/")
    ways = st.sampled_from(["plain", "plain", "encoded", "detour", "dot", "up", "slash"])
    spelt = [disguised(part, draw(ways)) for part in parts]
    climb = draw(st.sampled_from(["", "stages/predict-x/../../", "viewer/..%2f", "%2e%2e/", "stages/%2e%2e/"]))
    return "/files/" + climb + draw(st.sampled_from(["/", "%2f", "//"])).join(spelt)


def test_files_never_serve_a_byte_from_outside_the_allow_list(app):
    allowed = servable_digests(app["run_dir"])

    @SETTINGS
    @given(st.one_of(file_paths(app["names"]), run_file_paths(app["files"])))
    def probe(target):
        status, body = request(app["port"], "GET", target)
        check_answer(status, body, target, "/files")
        if status == 200:
            COUNTS["/files: bodies served (each a servable file)"] += 1
            assert hashlib.sha256(body).hexdigest() in allowed, target

    probe()


NUMBERS = st.one_of(st.floats(), st.integers(-2**70, 2**70), st.sampled_from([1e308, -1e308, 0.0, -0.0]))
JSON = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)


SCENE_DATES = ["2023-02-04", "2023-02-20", "2023-01-19"]


def job_bodies(models):
    near = st.builds(lambda w, s, dw, dh: [w, s, w + dw, s + dh], st.floats(39.85, 39.95), st.floats(1.38, 1.46),
                     st.floats(-0.01, 0.02), st.floats(-0.01, 0.02))
    inside = st.builds(lambda w, s, d: [w, s, w + d, s + d], st.floats(SCENE[0], SCENE[2] - 0.006),
                       st.floats(SCENE[1], SCENE[3] - 0.006), st.floats(0.0005, 0.006))
    doable = st.fixed_dictionaries({"model": st.sampled_from(models), "bbox": inside,
                                    "date": st.sampled_from(SCENE_DATES)},
                                   optional={"catalog": st.sampled_from(["recipe", 0, -1, 10**9])})
    # a job the server can do, with at most one field replaced by anything
    one_wrong = st.tuples(doable, st.sampled_from(["model", "bbox", "date", "catalog", "extra"]), JSON).map(
        lambda t: {**t[0], t[1]: t[2]})
    fields = st.fixed_dictionaries({
        "model": st.one_of(st.sampled_from(models), JSON),
        "bbox": st.one_of(near, st.lists(NUMBERS, max_size=5), JSON),
        "date": st.one_of(st.sampled_from(["2023-02-04", "2023-01-19", "20230204", "2023-W05", "1990-01-01"]),
                          st.dates().map(str), JSON)},
        optional={"catalog": st.one_of(st.sampled_from(["recipe", 0, -1, 10**9]), JSON), "extra": JSON})
    as_json = st.one_of(fields, JSON).map(lambda v: json.dumps(v).encode())  # NaN, Infinity as Python writes them
    nested = st.integers(1, 2000).map(lambda n: b"[" * n + b"]" * n)
    near_doable = st.one_of(doable, one_wrong).map(lambda v: json.dumps(v).encode())
    return st.one_of(near_doable, near_doable, as_json, as_json, nested, st.binary(max_size=64))


def test_job_bodies_are_answered_never_500_and_leave_no_folder(app):
    run_dir, port = app["run_dir"], app["port"]
    models = [m["id"] for m in json.loads(request(port, "GET", "/api/run")[1])["models"]]

    @SETTINGS
    @given(job_bodies(models))
    def probe(body):
        status, answer = request(port, "POST", "/api/jobs", body)
        check_answer(status, answer, body[:200], "/api/jobs")
        if status == 202:
            COUNTS["/api/jobs: accepted, then cancelled"] += 1
            job = json.loads(answer)["id"]
            app["jobs"].append(job)
            status, answer = request(port, "POST", f"/api/jobs/{job}/cancel")  # now or once it runs
            check_answer(status, answer, "cancel", "/api/jobs/<id>/cancel")

    probe()
    deadline = time.monotonic() + 120
    for job in app["jobs"]:  # every job ends; then only finished jobs have folders
        while json.loads(request(port, "GET", f"/api/jobs/{job}")[1])["state"] in ("queued", "running", "cancelling"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    for entry in (run_dir / "app").glob("*") if (run_dir / "app").exists() else []:
        assert entry.name.startswith(".source-") or (entry / "job.json").is_file(), entry
        COUNTS["/api/jobs: finished job folders at the end"] += entry.name[0] != "."


QUERY_VALUES = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e308", "-0", "", "40", "1.42", "teacher",
                                          "student-default", "true", "1"]), NUMBERS.map(str), st.text(max_size=8))


@st.composite
def queries(draw, predictions):
    pairs = draw(st.lists(st.tuples(st.sampled_from(["lon", "lat", "prediction", "inputs", "token", "x"]),
                                    QUERY_VALUES), max_size=6))
    if draw(st.booleans()):  # a point on the scene, with anything else beside it
        pairs = [("lon", str(draw(st.floats(SCENE[0] - 0.01, SCENE[2] + 0.01)))),
                 ("lat", str(draw(st.floats(SCENE[1] - 0.01, SCENE[3] + 0.01)))),
                 ("prediction", draw(st.sampled_from(predictions))),
                 ("inputs", draw(st.sampled_from(["true", "false", "1", "0"]))), *pairs[:2]]
    return urllib.parse.urlencode(pairs)


@st.composite
def tile_targets(draw):
    pid = draw(st.one_of(st.sampled_from(["teacher", "student-default", "job-0", "job-..%2f.."]),
                         st.text(max_size=8).map(lambda t: encoded(t).replace("/", "%2f") or "x")))
    layer = draw(st.one_of(st.sampled_from(["prediction", "confidence", "rgb", "weights"]), st.text(min_size=1, max_size=6).map(encoded)))
    z, x, y = (draw(st.integers(0, 2**70)) for _ in range(3))
    if draw(st.booleans()):  # a tile on the scene, or beside it
        z = draw(st.integers(8, 17))
        lon, lat = draw(st.floats(SCENE[0], SCENE[2])), draw(st.floats(SCENE[1], SCENE[3]))
        x = int((lon + 180) / 360 * 2**z) + draw(st.integers(-1, 1))
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z) + draw(st.integers(-1, 1))
    return draw(st.sampled_from([f"/p/{pid}/tiles/{layer}/{z}/{x}/{y}.png", f"/tiles/{layer}/{z}/{x}/{y}.png"]))


def test_query_strings_and_tile_addresses_are_answered_never_500(app):
    predictions = [p["id"] for p in json.loads(request(app["port"], "GET", "/api/run")[1])["predictions"]]

    @SETTINGS
    @given(st.one_of(queries(predictions).map(lambda q: f"/api/point?{q}"), tile_targets()))
    def probe(target):
        status, body = request(app["port"], "GET", target)
        check_answer(status, body, target, "/api/point" if target.startswith("/api/point") else "tiles")

    probe()
