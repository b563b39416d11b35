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


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    shutil.copy(REPO / "recipes" / "tiny.yaml", folder / "tiny.yaml")
    assert main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs")]) == 0
    run_dir = folder / "runs" / "tiny"
    (run_dir / "outside-link").symlink_to("/etc/hostname")
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).parent / "instarun"), "serve", str(run_dir),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
])
def test_refusals(served, path, status):
    url, _ = served
    assert get(url + path)[0] == status
