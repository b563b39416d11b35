"""The viewer, opened from disk in a real headless browser with no network."""

import json
import shutil
import time
from pathlib import Path

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


def test_a_click_on_the_static_viewer_shows_the_class_the_cog_holds_there(tmp_path, browser):
    """Opened from disk (file://) in chromium through WebDriver: a click reads the embedded
    lon/lat grid; rasterio reads the prediction COG at the clicked point for comparison."""
    import rasterio
    from rasterio.warp import transform
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from tests.conftest import off_machine_hosts

    driver, proxy = browser
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "tiny"
    report = json.loads((run / "report.json").read_text())
    driver.get((run / "viewer" / "index.html").as_uri())
    map_element = driver.find_element(By.ID, "map")
    checked = 0
    for dx, dy in ((0, 0), (-60, 40), (50, -30), (20, 70)):
        ActionChains(driver).move_to_element_with_offset(map_element, dx, dy).click().perform()
        point = driver.find_element(By.ID, "point")
        lat, lon = (float(v) for v in point.text.splitlines()[0].split(","))
        with rasterio.open(run / report["prediction"]) as dataset:
            (x,), (y,) = transform("EPSG:4326", dataset.crs, [lon], [lat])
            row, column = dataset.index(x, y)
            if not (0 <= row < dataset.height and 0 <= column < dataset.width):
                continue
            value = int(dataset.read(1)[row, column])
            names = [dataset.tags(1)[f"class_{i}"] for i in range(3)]
        shown = point.find_element(By.CSS_SELECTOR, ".point-class").text
        assert shown == (names[value] if value != 255 else "no data"), (point.text, value)
        checked += 1
    assert checked >= 3
    assert off_machine_hosts(proxy.requests) == set()


def test_the_students_maps_side_by_side_open_from_disk(tmp_path, browser):
    """Two students: compare.html at the run's top level shows one map left of the slider and
    the other right of it, both from their viewer stages' own tiles, with no network."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.conftest import off_machine_hosts

    driver, proxy = browser
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"), "--set", "student.depth=1,2"]) == 0
    run = tmp_path / "runs" / "tiny"
    report = json.loads((run / "report.json").read_text())
    assert report["compare"] == "compare.html"
    driver.get((run / "compare.html").as_uri())
    folders = {str(Path(v["viewer"]).parent) for v in report["variants"]}
    loaded = lambda: {f for f in folders if driver.execute_script(  # noqa: E731
        "return [...document.images].some(i => i.src.includes(arguments[0]) && i.complete && i.naturalWidth)", f)}
    deadline = time.monotonic() + 30
    while loaded() != folders and time.monotonic() < deadline:
        time.sleep(0.2)
    assert loaded() == folders  # both students' tiles drawn
    assert Select(driver.find_element(By.ID, "left")).first_selected_option.text.startswith("student depth 1")
    assert Select(driver.find_element(By.ID, "right")).first_selected_option.text.startswith("student depth 2")
    before = driver.execute_script("return document.querySelector('.leaflet-right-pane').style.clip")
    driver.execute_script("const s = document.getElementById('slider'); s.value = 0.2; s.dispatchEvent(new Event('input'))")
    assert before.startswith("rect(") and driver.execute_script(
        "return document.querySelector('.leaflet-right-pane').style.clip") != before
    driver.save_screenshot(str(tmp_path / "compare.png"))
    assert off_machine_hosts(proxy.requests) == set()
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(REPO / "recipes" / "tiny.yaml", one / "tiny.yaml")
    assert main([str(one / "tiny.yaml"), "--runs-dir", str(one / "runs")]) == 0
    assert not (one / "runs" / "tiny" / "compare.html").exists()  # one student: nothing to compare


def test_a_click_on_the_embeddings_highlights_the_cells_most_like_it_in_the_cog(tmp_path, browser):
    """tiny.yaml maps int8 embeddings: a click in chromium marks its 10 nearest cells by cosine;
    numpy finds them from the COG itself (decoded by the sidecar's rule, the clicked cell the
    one whose centre is nearest the click, in metres)."""
    import rasterio
    from pyproj import Transformer
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, _ = browser
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "tiny"
    report = json.loads((run / "report.json").read_text())
    cog = run / report["variants"][0]["embeddings_map"]
    assert json.loads(cog.with_name("embeddings.json").read_text())["quantize"] == "int8"
    with rasterio.open(cog) as dataset:
        codes, transform, crs = dataset.read().astype(np.float64), dataset.transform, dataset.crs
    valid = (codes != -128).all(0)
    rows, columns = np.nonzero(valid)
    vectors = codes[:, rows, columns].T / 127
    xs, ys = transform * (columns + 0.5, rows + 0.5)
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    driver.get((run / "viewer" / "index.html").as_uri())
    assert "Embeddings (PCA 1-3 as colour)" in driver.find_element(By.CLASS_NAME, "leaflet-control-layers").text
    map_element = driver.find_element(By.ID, "map")
    checked = 0
    for dx, dy in ((0, 0), (-40, 30), (35, -25)):
        ActionChains(driver).move_to_element_with_offset(map_element, dx, dy).click().perform()
        lat, lon = driver.execute_script("return window.lastClick")
        x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
        distance = np.hypot(xs - x, ys - y)
        if distance.min() > abs(transform.a):
            continue  # off the embeddings' cells: nothing highlighted
        clicked = int(distance.argmin())
        cosine = vectors @ vectors[clicked] / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(vectors[clicked]))
        expected = np.argsort(-cosine, kind="stable")[:10]
        lons, lats = to_lonlat.transform(xs[expected], ys[expected])
        shown = driver.execute_script("return window.neighbours.map((m) => [m.getLatLng().lat, m.getLatLng().lng])")
        assert len(driver.find_elements(By.CSS_SELECTOR, "path.neighbour")) == 10
        assert np.allclose(sorted(map(tuple, shown)), sorted(zip(lats, lons)), atol=1e-5)
        assert np.allclose(driver.execute_script("return window.similarities"), cosine[expected], atol=1e-6)
        assert driver.execute_script("return window.similarities")[0] == pytest.approx(1.0)
        checked += 1
    assert checked >= 2
