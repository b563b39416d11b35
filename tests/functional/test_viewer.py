"""The viewer, opened from disk in a real headless browser with no network."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from instageo.cli import main
from tests.conftest import REPO
from tests.servers import RecordingProxy, screenshot


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed "
                    "(scripts/system-deps.sh installs it as root)")
def test_the_viewer_renders_tiles_offline(tmp_path):
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 0
    report = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())
    assert (tmp_path / "runs" / "tiny" / report["viewer"]).name == "index.html"
    page = tmp_path / "runs" / "tiny" / "viewer" / "index.html"  # the run's own link to it
    assert "http" not in page.read_text().split("<script>")[1]
    with RecordingProxy() as proxy:  # every request that would leave the machine lands here
        screenshot(page.as_uri(), tmp_path / "viewer.png", proxy.url)
    # Chromium's own services (updates, clock, accounts) still call home despite the flags;
    # the page itself must ask for nothing (no tiles, scripts or styles from a CDN)
    hosts = {request.split()[1].split("://")[-1].split("/")[0].split(":")[0] for request in proxy.requests}
    assert {h for h in hosts if not h.endswith((".google.com", ".googleapis.com", ".gvt1.com"))} == set()
    shot = np.asarray(Image.open(tmp_path / "viewer.png").convert("RGB")).astype(int)
    map_area = shot[:, :760].reshape(-1, 3)
    background = (np.abs(map_area - [34, 34, 34]).sum(axis=1) < 10).mean()
    assert background < 0.9  # tiles were drawn
    red, green, blue = map_area.T
    assert ((green > red + 25) & (green > blue)).mean() > 0.01  # vegetation's green
    assert ((blue > red + 25) & (blue > green)).mean() > 0.001  # water's blue
    assert len(np.unique(map_area, axis=0)) > 50
