"""`instarun serve` on 127.0.0.1: viewer, dynamic tiles, and what it refuses."""

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import morecantile
import pytest

from instageo.cli import main
from tests.conftest import REPO
from tests.servers import free_port


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as answer:
            return answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), ""


HEAD_SECONDS = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    shutil.copy(REPO / "recipes" / "tiny.yaml", folder / "tiny.yaml")
    assert main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs")]) == 0
    run_dir = folder / "runs" / "tiny"
    (run_dir / "outside-link").symlink_to("/etc/hostname")
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).parent / "instarun"), "serve", str(run_dir),
                                "--port", str(port), "--header-timeout", str(HEAD_SECONDS)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/files/report.json", timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        yield url, run_dir
    finally:
        process.terminate()
        process.wait(10)


def test_viewer_and_tiles_are_served(served):
    url, run_dir = served
    status, body, _ = get(url + "/")
    assert status == 200 and b"leaflet/leaflet.js" in body
    report = json.loads((run_dir / "report.json").read_text())
    bbox = report["variants"][0]["prediction_area"]["bbox"]
    tile = next(morecantile.tms.get("WebMercatorQuad").tiles(*bbox, zooms=[13]))
    status, body, kind = get(f"{url}/tiles/prediction/{tile.z}/{tile.x}/{tile.y}.png")
    assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG")


@pytest.mark.parametrize("path, status", [
    ("/tiles/prediction/13/0/0.png", 404),  # outside the area
    ("/tiles/weights/13/0/0.png", 400),
    ("/tiles/prediction/30/0/0.png", 400),
    ("/files/../../../etc/passwd", 404),
    ("/files/%2E%2E/%2E%2E/etc/passwd", 404),
    ("/files//etc/passwd", 404),
    ("/files/outside-link", 404),
    ("/files/no-such-file", 404),
    ("/files/..%2F..%2F..%2Fetc%2Fpasswd", 404),  # encoded slashes
    ("/files/%252E%252E/%252E%252E/etc/passwd", 404),  # encoded twice
    ("/files/..%5C..%5Cetc%5Cpasswd", 404),  # backslashes
    ("/files/report.json%00.png", 404),  # NUL byte
    ("/files/%2Fetc%2Fpasswd", 404),  # an encoded absolute path
    ("/tiles/prediction/-1/0/0.png", 404),  # not an int route
    ("/files/" + "a/" * 600, 414),
])
def test_refusals(served, path, status):
    url, _ = served
    code, body, _ = get(url + path)
    assert code == status and error_of(body)  # the app's one error shape


def error_of(body: bytes) -> str:
    """The message of the app's error shape, {"error": "...", "field": ...} (one line)."""
    answer = json.loads(body)
    assert set(answer) == {"error", "field"} and "\n" not in answer["error"], answer
    return answer["error"]


def test_requests_with_a_body_or_another_method_are_refused(served):
    url, _ = served
    for method, data, status in (("POST", b"x" * 10, 405), ("PUT", b"x" * 10, 405), ("GET", b"x" * 100, 413)):
        request = urllib.request.Request(url + "/files/report.json", data=data, method=method)
        try:
            urllib.request.urlopen(request, timeout=20)
            raise AssertionError(f"{method} with a body was served")
        except urllib.error.HTTPError as error:
            assert error.code == status


def test_the_server_listens_on_loopback_only(served):
    """/proc/net/tcp lists every listening socket: the server's port is bound to 127.0.0.1."""
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex


def test_a_foreign_host_header_is_refused(served):
    """A page on another origin whose name resolves to 127.0.0.1 (DNS rebinding) sends its
    own Host: it must not read the run."""
    url, _ = served
    request = urllib.request.Request(url + "/files/report.json", headers={"Host": "attacker.example:80"})
    try:
        status = urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == 400
    assert get(url + "/files/report.json")[0] == 200  # the loopback name still works


def test_no_traversal_from_a_served_folder_reaches_a_file_the_map_does_not_show(served):
    """Each form once returned the bundle's weights or the chips' index: the allow-list was
    checked on the path as asked, before '..' was resolved."""
    url, run_dir = served
    predict = next(run_dir.glob("stages/predict-*")).name
    hidden = [p.relative_to(run_dir / "stages").as_posix() for p in (
        next(run_dir.glob("stages/export-*/bundle/model.onnx")), next(run_dir.glob("stages/search-*/observations.csv")),
        next(run_dir.glob("stages/chips-*/index.csv")), next(run_dir.glob("stages/chips-*/manifest.json")))]
    forms = []
    for target in hidden:
        forms += [f"stages/{predict}/../{target}", f"stages/{predict}/%2e%2e/{target}",
                  f"stages/{predict}/..%2f{target.replace('/', '%2f')}", f"stages/{predict}%2f..%2f{target}",
                  f"viewer/../../stages/{target}", f"stages/{predict}/./../{target}"]
    leaked = [form for form in forms if get(f"{url}/files/{form}")[0] != 404]
    assert leaked == [] and len(forms) == 24
    assert get(f"{url}/files/stages/{predict}/manifest.json")[0] == 200  # the folder itself is served


def test_only_what_the_map_shows_is_served(served):
    url, run_dir = served
    teacher = next(run_dir.glob("stages/teacher-*/teacher.pt")).relative_to(run_dir)
    log = next(run_dir.glob("logs/*.log")).relative_to(run_dir)
    chips = next(run_dir.glob("stages/chips-*/index.csv")).relative_to(run_dir)
    for hidden in (teacher, log, chips):
        assert get(f"{url}/files/{hidden}")[0] == 404, hidden
    report = json.loads((run_dir / "report.json").read_text())
    assert get(f"{url}/files/{report['prediction']}")[0] == 200


def test_the_report_is_read_again_after_a_rerun_and_a_damaged_cog_is_one_500(served):
    url, run_dir = served
    report_path = run_dir / "report.json"
    original = report_path.read_text()
    report = json.loads(original)
    bbox = report["variants"][0]["prediction_area"]["bbox"]
    tile = next(morecantile.tms.get("WebMercatorQuad").tiles(*bbox, zooms=[13]))
    prediction = run_dir / report["prediction"]
    damaged = prediction.with_name("damaged.tif")
    damaged.write_bytes(prediction.read_bytes()[:3000])
    try:
        report_path.write_text(json.dumps({**report, "prediction": str(damaged.relative_to(run_dir))}))
        time.sleep(0.05)
        status, body, _ = get(f"{url}/tiles/prediction/{tile.z}/{tile.x}/{tile.y}.png")
        assert status == 500 and "TIFFReadDirectory" in error_of(body) and b"Traceback" not in body
    finally:
        report_path.write_text(original)
        damaged.unlink()
    assert get(f"{url}/tiles/prediction/{tile.z}/{tile.x}/{tile.y}.png")[0] == 200


def test_a_damaged_report_is_one_line_at_start_and_a_500_while_serving(served, tmp_path):
    url, run_dir = served
    copy = tmp_path / "run"
    (copy).mkdir()
    (copy / "report.json").write_text('{"viewer": "vie')  # cut short
    serve = subprocess.run([str(Path(sys.executable).parent / "instarun"), "serve", str(copy), "--port",
                            str(free_port())], capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2 and "Traceback" not in serve.stderr, serve.stderr
    assert serve.stderr.strip().splitlines()[-1].startswith(f"error: {copy / 'report.json'}: not a readable report")
    report_path = run_dir / "report.json"
    original = report_path.read_text()
    try:
        report_path.write_text("\0" * len(original))  # zeroed while the server runs
        status, body, _ = get(url + "/api/run")  # what the app's page asks first
        assert status == 500 and "not a readable report" in error_of(body)
    finally:
        report_path.write_text(original)
    assert get(url + "/api/run")[0] == 200


def test_connections_that_never_finish_their_headers_are_closed(served):
    """Were kept open for ever (300 slow-header connections held): now HEAD_SECONDS."""
    import socket

    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    slow = []
    for _ in range(50):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection.sendall(b"GET /files/report.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(connection)
    started = time.monotonic()
    try:
        assert get(url + "/files/report.json")[0] == 200  # the server still answers others
        for connection in slow:
            assert connection.recv(1024) == b""  # closed by the server, with nothing sent
        assert HEAD_SECONDS - 0.5 < time.monotonic() - started < HEAD_SECONDS + 5
    finally:
        for connection in slow:
            connection.close()


def send(url: str, method: str, path: str, body: bytes | None = None, kind: str = "application/json"):
    """(status, body) of a request; urllib sends Content-Length for a body, none without."""
    request = urllib.request.Request(url + path, data=body, method=method,
                                     headers={"Content-Type": kind} if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_bad_requests_are_4xx_in_one_shape_never_500(served):
    """Each of these answered 500 (unhashable model, RecursionError, NaN written into JSON, a
    PROJ error) or took a date the user did not write."""
    url, run_dir = served
    report = json.loads((run_dir / "report.json").read_text())
    job = {"model": "student-default", "bbox": report["variants"][0]["prediction_area"]["bbox"], "date": "2023-02-04"}
    cases = [
        ("POST", "/api/jobs", json.dumps({**job, "model": ["student-default"]}).encode(), 400, "model"),
        ("POST", "/api/jobs", b"[" * 2000 + b"]" * 2000, 400, None),
        ("POST", "/api/jobs", b'{"model": "student-default", "bbox": [NaN, 1, 2, 3], "date": "2023-02-04"}', 400, None),
        ("POST", "/api/jobs", json.dumps({**job, "bbox": [1e308, 1, 2, 3]}).encode(), 400, "bbox"),
        ("POST", "/api/jobs", json.dumps({**job, "date": "20230204"}).encode(), 400, "date"),
        ("POST", "/api/jobs", json.dumps({**job, "catalog": True}).encode(), 400, "catalog"),
        ("POST", "/api/jobs", json.dumps({**job, "extra": 1}).encode(), 400, "extra"),
        ("POST", "/api/jobs", b"\xff\xfe", 400, None),
        ("GET", "/api/point?lon=nan&lat=1&prediction=teacher", None, 400, "lon"),
        ("GET", "/api/point?lon=1e308&lat=1&prediction=teacher", None, 400, "lon"),
        ("GET", "/api/point?lon=1&lon=2&lat=1", None, 400, "lon"),
        ("GET", "/api/point?lon=1&lat=1&prediction=nope", None, 404, None),
        ("GET", "/api/no-such-route", None, 404, None),
        ("POST", "/api/jobs/no-such-job/cancel", None, 404, None),  # no body needed (was 411)
        ("GET", "/files/" + "x" * 300, None, 404, None),  # a name the file system refuses
    ]
    for method, path, body, status, field in cases:
        code, answer = send(url, method, path, body)
        assert code == status and json.loads(answer)["field"] == field and error_of(answer), (path, body, answer)
