"""`instarun serve` as the map app, driven in Debian's chromium through its WebDriver
(selenium + chromium-driver): draw an area, run a model on a new date, watch the job, click
a pixel, compare two maps. Every request the page makes off the machine would land in a
recording proxy; screenshots of each step go to the test's folder (and INSTAGEO_SCREENSHOTS)."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import rasterio
from rasterio.warp import transform

from instageo.cli import main
from tests.conftest import REPO, off_machine_hosts
from tests.servers import free_port

INSTARUN = str(Path(sys.executable).parent / "instarun")
NEW_DATE = "2023-02-04"  # tiny.yaml's stage predicts for 2023-02-20
TOKEN = "s3cret-token-for-the-test"


def start(run_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([INSTARUN, "serve", str(run_dir), "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=None if env is None else {**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/app/app.css", timeout=2)
            return process, url
        except urllib.error.HTTPError:  # answered (401 with a token): it is up
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {process.stdout.read() if process.poll() is not None else ''}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    shutil.copy(REPO / "recipes" / "tiny.yaml", folder / "tiny.yaml")
    assert main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs")]) == 0
    return folder / "runs" / "tiny"


def shoot(driver, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    if os.environ.get("INSTAGEO_SCREENSHOTS"):
        Path(os.environ["INSTAGEO_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(os.environ["INSTAGEO_SCREENSHOTS"]) / f"{name}.png")


def wait_for(condition, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_draw_run_inspect_and_compare_in_a_real_browser(run_dir, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, proxy = browser
    process, url = start(run_dir)
    try:
        driver.get(url + "/")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"))
        assert "student depth 1" in driver.find_element(By.ID, "models").text
        wait_for(lambda: driver.execute_script(
            "return [...document.images].some(i => i.src.includes('/tiles/prediction/') && i.complete && i.naturalWidth)"))
        shoot(driver, tmp_path, "1-opened")

        # an uploaded GeoJSON sets the area to its bounds; a broken one is one line
        outline = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[
            [39.905, 1.415], [39.915, 1.415], [39.912, 1.425], [39.905, 1.415]]]}}
        (tmp_path / "area.geojson").write_text(json.dumps(outline))
        driver.find_element(By.ID, "geojson").send_keys(str(tmp_path / "area.geojson"))
        wait_for(lambda: driver.find_element(By.ID, "area-text").text == "39.9050, 1.4150, 39.9150, 1.4250")
        (tmp_path / "broken.geojson").write_text('{"type": "Feat')
        driver.find_element(By.ID, "geojson").send_keys(str(tmp_path / "broken.geojson"))
        wait_for(lambda: driver.find_element(By.ID, "error").text.startswith("broken.geojson: not a GeoJSON area"))
        driver.get(url + "/")  # a fresh page for the drawing
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#model option"))

        # draw a box inside the stage's map (the middle of the map, a third of it wide), a new date, run
        map_element = driver.find_element(By.ID, "map")
        width, height = map_element.size["width"], map_element.size["height"]
        driver.find_element(By.ID, "draw").click()
        ActionChains(driver).move_to_element_with_offset(map_element, -width // 6, -height // 6).click_and_hold() \
            .move_by_offset(width // 3, height // 3).release().perform()
        assert driver.find_element(By.ID, "run").is_enabled()
        driver.execute_script(f"document.getElementById('date').value = '{NEW_DATE}'")
        driver.find_element(By.ID, "run").click()
        wait_for(lambda: driver.find_element(By.ID, "job-text").text == "done"
                 or driver.find_element(By.ID, "error").text, 120)
        assert driver.find_element(By.ID, "error").text == ""
        shown = Select(driver.find_element(By.ID, "show")).first_selected_option.get_attribute("value")
        assert shown.startswith("job-")
        wait_for(lambda: driver.execute_script(
            f"return [...document.images].some(i => i.src.includes('/p/{shown}/tiles/') && i.complete && i.naturalWidth)"))
        shoot(driver, tmp_path, "2-job-done")

        # click the middle of the drawn box: the page shows the class the COG holds there
        ActionChains(driver).move_to_element(map_element).click().perform()
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#point .point-class"))
        text = driver.find_element(By.ID, "point").text
        lat, lon = (float(v) for v in text.splitlines()[0].split(" ", 2)[-1].split(","))
        result = run_dir / "app" / shown.removeprefix("job-") / "prediction.tif"
        with rasterio.open(result) as dataset:
            (x,), (y,) = transform("EPSG:4326", dataset.crs, [lon], [lat])
            value = next(dataset.sample([(x, y)]))[0]
            names = [dataset.tags(1)[f"class_{i}"] for i in range(3)]
        shown_class = driver.find_elements(By.CSS_SELECTOR, "#point .point-class")[0].text
        assert shown_class == (names[value] if value != 255 else "no data"), (text, value)
        # and what the model read there: each step's date and bands, the first step's red as the
        # demo scene's own B04 COG holds it on that date (the scene is regenerated by its seed)
        steps = driver.find_elements(By.CSS_SELECTOR, "#point table.inputs tr")
        assert len(steps) == 1 + 2 and "red" in steps[0].text  # a header, tiny.yaml's 2 steps
        first_date, *first_values = steps[1].text.split()
        bands = steps[0].text.split()[1:]
        scene = next((run_dir / "app").glob(".source-*")) / "scene"
        with rasterio.open(next(scene.glob(f"hls-demo/HLS.demo.{first_date}/B04.tif"))) as red:
            (x,), (y,) = transform("EPSG:4326", red.crs, [lon], [lat])
            raw = next(red.sample([(x, y)]))[0]
        shown_red = first_values[bands.index("red")]
        assert abs(float(shown_red) - raw * 1e-4) < 2e-3, (shown_red, raw)  # toPrecision(3) of the reflectance
        shoot(driver, tmp_path, "3-clicked")

        # compare with the student's stage map: a slider, the second map clipped at it
        compare = Select(driver.find_element(By.ID, "compare"))
        compare.select_by_value("student-default")
        assert driver.find_element(By.ID, "swipe").is_displayed()
        clip = driver.execute_script("return document.querySelector('.leaflet-compare-pane').style.clip")
        assert clip.startswith("rect(")
        driver.execute_script("const s = document.getElementById('swipe-slider'); s.value = 0.4;"
                              "s.dispatchEvent(new Event('input'))")
        assert driver.execute_script("return document.querySelector('.leaflet-compare-pane').style.clip") != clip
        driver.find_element(By.ID, "observations").click()
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "path.leaflet-interactive"))
        shoot(driver, tmp_path, "4-compared")
        logs = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
                and "404" not in entry["message"]]  # tiles outside a map's area are 404s
        assert logs == []
    finally:
        process.terminate()
        process.wait(10)

    # the job's COGs are the predict stage's bytes for that area and date
    job = json.loads(next((run_dir / "app").glob("*/job.json")).read_text())
    assert job["date"] == NEW_DATE and job["state"] == "done"
    runs = run_dir.parent
    assert main([str(runs.parent / "tiny.yaml"), "--runs-dir", str(runs), "--until", "predict",
                 "--set", f"export.predict.bbox=[{','.join(map(repr, job['bbox']))}]",
                 "--set", f"export.predict.date={NEW_DATE}"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    stage_cog = run_dir / report["variants"][0]["prediction"]
    assert (run_dir / job["result"] / "prediction.tif").read_bytes() == stage_cog.read_bytes()
    assert off_machine_hosts(proxy.requests) == set(), proxy.requests


def test_beyond_loopback_a_token_is_required_and_checked(run_dir):
    refused = subprocess.run([INSTARUN, "serve", str(run_dir), "--host", "0.0.0.0", "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "needs a token" in refused.stderr and "Traceback" not in refused.stderr
    # the token from the environment (not in `ps`); the printed URL is one a browser opens
    process, url = start(run_dir, "--host", "0.0.0.0", env={"INSTAGEO_TOKEN": TOKEN})
    try:
        printed = process.stdout.readline()
        assert f"on {url}/?token={TOKEN} (listening on all interfaces" in printed, printed
        for path in ("/", "/api/run", "/tiles/prediction/12/0/0.png"):
            with pytest.raises(urllib.error.HTTPError) as refusal:
                urllib.request.urlopen(url + path, timeout=10)
            assert refusal.value.code == 401, path
        wrong = urllib.request.Request(url + "/api/run", headers={"Authorization": "Bearer not-the-token"})
        with pytest.raises(urllib.error.HTTPError) as refusal:
            urllib.request.urlopen(wrong, timeout=10)
        assert refusal.value.code == 401
        right = urllib.request.Request(url + "/api/run", headers={"Authorization": f"Bearer {TOKEN}"})
        assert json.loads(urllib.request.urlopen(right, timeout=10).read())["name"] == "tiny"
        first = urllib.request.urlopen(f"{url}/?token={TOKEN}", timeout=10)  # the URL serve prints
        cookie = first.headers["Set-Cookie"].split(";")[0]
        assert first.status == 200 and "HttpOnly" in first.headers["Set-Cookie"]
        again = urllib.request.Request(url + "/api/run", headers={"Cookie": cookie})
        assert urllib.request.urlopen(again, timeout=10).status == 200
    finally:
        process.terminate()
        process.wait(10)


def post_job(url: str, body, kind: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url + "/api/jobs", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_token_comes_from_one_place_and_is_long_enough(run_dir, tmp_path):
    short, good = tmp_path / "short", tmp_path / "good"
    short.write_text("abc\n")
    good.write_text(TOKEN + "\n")
    for args, env, words in ((["--token-file", str(short)], {}, "--token-file"),
                             (["--token-file", str(good), "--token", TOKEN], {}, "--token and --token-file: give one"),
                             (["--token-file", str(tmp_path / "none")], {}, "cannot read it"),
                             ([], {"INSTAGEO_TOKEN": "abc"}, "$INSTAGEO_TOKEN: use at least 16 characters")):
        refused = subprocess.run([INSTARUN, "serve", str(run_dir), "--port", str(free_port()), *args],
                                 capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    process, url = start(run_dir, "--token-file", str(good))
    try:
        with pytest.raises(urllib.error.HTTPError) as refusal:
            urllib.request.urlopen(url + "/api/run", timeout=10)
        assert refusal.value.code == 401
        right = urllib.request.Request(url + "/api/run", headers={"Authorization": f"Bearer {TOKEN}"})
        assert urllib.request.urlopen(right, timeout=10).status == 200
    finally:
        process.terminate()
        process.wait(10)


def job_folders(run_dir: Path) -> set[Path]:
    """app/'s folders but the demo scene sizing a job may generate once (jobs.demo_source):
    whether it is there depends on which test asked first."""
    return {p for p in (run_dir / "app").glob("*") if not p.name.startswith(".source-")}


def test_job_requests_that_are_wrong_or_too_big_are_one_line_4xx(run_dir):
    """Wrong fields are 400s naming the field; jobs the server should not start are 422s
    naming what the app's user can change (never a recipe field): an area too large, one over
    the server's --max-tiles (a 5-degree box over this 0.03-degree scene was accepted as
    595,210 tiles), one where the catalogue has no scene, a date with no acquisition."""
    process, url = start(run_dir, "--max-tiles", "50")
    folders_before = job_folders(run_dir)
    try:
        good = {"model": "student-default", "bbox": [39.9, 1.41, 39.91, 1.42], "date": NEW_DATE}
        for body, status, field, words in (
                ({**good, "model": "nope"}, 400, "model", "model 'nope' is not valid"),
                ({**good, "bbox": [1, 2, 3]}, 400, "bbox", "bbox: should be"),
                ({**good, "date": "2023-13-01"}, 400, "date", "not YYYY-MM-DD"),
                ({**good, "catalog": 3}, 400, "catalog", "catalog 3 is not valid"),
                ({**good, "catalog": "/etc/passwd"}, 400, "catalog", "catalog: should be"),
                ({**good, "bbox": [-170, -80, 170, 80]}, 422, "bbox", "draw a smaller area"),
                ({**good, "bbox": [37.4, -1.1, 42.4, 3.9]}, 422, "bbox", "draw a smaller area"),
                ({**good, "bbox": [39.8, 1.3, 40.0, 1.5]}, 422, "bbox", "start instarun serve with a larger --max-tiles"),
                ({**good, "bbox": [10.0, 10.0, 10.01, 10.01]}, 422, "bbox", "has no scene over the drawn area"),
                ({**good, "date": "1990-01-01"}, 422, "bbox", "pick another date")):
            code, answer = post_job(url, body)
            assert (code, answer["field"]) == (status, field) and words in answer["error"], (body, answer)
            assert "\n" not in answer["error"] and "export." not in answer["error"], answer
        assert post_job(url, good, "text/plain")[0] == 400  # a cross-site form cannot send JSON without asking
        big = urllib.request.Request(url + "/api/jobs", data=b"x" * 5000, method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refusal:
            urllib.request.urlopen(big, timeout=10)
        assert refusal.value.code == 413
        assert job_folders(run_dir) == folders_before  # no refused job made a folder
    finally:
        process.terminate()
        process.wait(10)


def test_cancel_answers_cancelling_then_the_job_ends_cancelled_leaving_no_folder(run_dir):
    """A running job, cancelled over HTTP without a body (was 411): the answer says
    "cancelling" (it said "running"), the job then ends "cancelled", and app/ holds no folder
    of it (failed and cancelled jobs left an empty app/<key>/)."""
    process, url = start(run_dir, "--max-tiles", "100000")
    try:
        body = {"model": "student-default", "bbox": [39.7, 1.2, 40.1, 1.6], "date": NEW_DATE}  # mostly nodata
        code, job = post_job(url, body)
        assert code == 202, job

        def state():
            return json.loads(urllib.request.urlopen(f"{url}/api/jobs/{job['id']}", timeout=10).read())
        wait_for(lambda: state()["done"] > 0, 60)
        cancel = urllib.request.Request(f"{url}/api/jobs/{job['id']}/cancel", method="POST")
        assert json.loads(urllib.request.urlopen(cancel, timeout=10).read())["state"] == "cancelling"
        assert wait_for(lambda: (s := state())["state"] != "cancelling" and s, 60)["state"] == "cancelled"
        assert not (run_dir / "app" / job["key"]).exists() and not list((run_dir / "app").glob(".partial-*"))
    finally:
        process.terminate()
        process.wait(10)


def test_a_cancelled_job_leaves_nothing_and_a_queued_one_never_runs(run_dir):
    """Held under the queue's lock, two jobs are queued; the second is cancelled while it
    waits, the first is told to stop before its first tile. Neither leaves a file."""
    import datetime as dt

    from instageo.deploy.jobs import APP_FOLDER, JobQueue

    report = json.loads((run_dir / "report.json").read_text())
    bundle = (run_dir / report["variants"][0]["onnx"]).parent
    queue = JobQueue(run_dir)
    try:
        with queue.lock:
            running = queue.submit("student", bundle, (39.90, 1.41, 39.92, 1.43), dt.date(2023, 1, 19), None)
            waiting = queue.submit("student", bundle, (39.90, 1.41, 39.93, 1.43), dt.date(2023, 1, 19), None)
            running.cancel.set()  # as if the user pressed cancel once its first tile is read
            assert queue.cancel(waiting.id).state == "cancelled"
        wait_for(lambda: running.state not in ("queued", "running"), 60)
        assert running.state == "cancelled" and waiting.state == "cancelled"
        for job in (running, waiting):
            assert not (run_dir / APP_FOLDER / job.key / "job.json").exists()
            assert not list((run_dir / APP_FOLDER / job.key).glob("*.tif"))
            assert not list((run_dir / APP_FOLDER / job.key).glob(".partial-*"))
    finally:
        queue.close()


def test_a_job_can_read_another_catalogue_the_server_was_given(run_dir, tmp_path):
    """serve --catalog: the page picks it by its index (never a path); the job reads that
    catalogue's items, not the recipe's scene."""
    assert main(["demo-data", str(tmp_path / "other"), "--seed", "3", "--size", "96", "--acquisitions", "4",
                 "--no-quicklook"]) == 0
    process, url = start(run_dir, "--catalog", str(tmp_path / "other" / "catalog.json"))
    try:
        run = json.loads(urllib.request.urlopen(url + "/api/run", timeout=10).read())
        assert [c["id"] for c in run["catalogues"]] == ["recipe", 0]
        body = {"model": "student-default", "bbox": [39.901, 1.415, 39.91, 1.425], "date": "2023-01-19", "catalog": 0}
        request = urllib.request.Request(url + "/api/jobs", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        job = json.loads(urllib.request.urlopen(request, timeout=10).read())

        def state():
            return json.loads(urllib.request.urlopen(f"{url}/api/jobs/{job['id']}", timeout=10).read())
        done = wait_for(lambda: (s := state())["state"] in ("done", "failed") and s, 120)
        assert done["state"] == "done", done
        items = json.loads((run_dir / done["result"] / "items.json").read_text())
        assert items and all(str(tmp_path / "other") in band["href"] for item in items.values()
                             for band in item["bands"].values())
    finally:
        process.terminate()
        process.wait(10)
