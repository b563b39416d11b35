"""The search stage against a real STAC API (stac-fastapi-pgstac) and local catalogues."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from instageo.cli import main
from instageo.data import demo
from instageo.data.catalogue import LocalCatalogue
from tests.conftest import SHARED_DATA
from tests.servers import FaultProxy, RangeFileServer

TIME = "chips: {size: 16, time: {steps: 2, step_days: 30, tolerance_days: 20}}"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return demo.generate(tmp_path_factory.mktemp("scene"), seed=5, size=96, acquisitions=6, points=30)


@pytest.fixture(scope="module")
def scene_api(scene, pgstac):
    """The demo scene's items in pgstac, their assets served over HTTP from loopback."""
    root = scene.catalog.parent
    with RangeFileServer(root) as files:
        items = []
        for item in LocalCatalogue(scene.catalog).items:
            for asset in item["assets"].values():
                asset["href"] = files.url + "/" + str(Path(asset["href"]).relative_to(root))
            items.append(item)
        collection = json.loads((root / demo.COLLECTION / "collection.json").read_text())
        collection["links"] = []
        pgstac.load([collection], items)
        yield pgstac


def write(folder: Path, name: str, text: str) -> Path:
    """A recipe; the demo scene's observations carry the demo's three classes."""
    path = folder / name
    path.write_text(text if "\ntask:" in text else text.rstrip("\n") + "\ntask: {classes: [other, water, vegetation]}\n")
    return path


def search(recipe: Path, runs: Path, *args) -> tuple[int, dict]:
    code = main([str(recipe), "--runs-dir", str(runs), "--until", "search", *args])
    report_path = runs / recipe.stem / "report.json"
    return code, json.loads(report_path.read_text()) if report_path.exists() else {}


def outputs(runs: Path, name: str) -> tuple[list[str], dict]:
    stage = next((runs / name / "stages").glob("search-*"))
    items = json.loads((stage / "items.json").read_text())
    return sorted(items), json.loads((stage / "candidates.json").read_text())


def test_pgstac_and_local_catalogue_give_the_same_items(scene, scene_api, tmp_path):
    shutil.copy(scene.observations, tmp_path / "obs.csv")
    observations = "observations: {kind: points, path: obs.csv}"
    api = write(tmp_path, "api.yaml", f"name: api\ndata:\n  source: {{kind: stac, url: '{scene_api.url}', "
                f"collections: [hls-demo], preset: hls}}\n  {observations}\n  {TIME}\n")
    local = write(tmp_path, "local.yaml", f"name: local\ndata:\n  source: {{kind: catalog, path: "
                  f"{scene.catalog}, collections: [hls-demo]}}\n  {observations}\n  {TIME}\n")
    assert search(api, tmp_path / "runs")[0] == 0
    assert search(local, tmp_path / "runs")[0] == 0
    api_items, api_candidates = outputs(tmp_path / "runs", "api")
    local_items, local_candidates = outputs(tmp_path / "runs", "local")
    assert api_items == local_items and len(api_items) == 6
    assert api_candidates == local_candidates and len(api_candidates) == 30


def test_real_sentinel2_items_match_between_pgstac_and_a_static_catalogue(pgstac, tmp_path):
    import pystac

    collection = json.loads((SHARED_DATA / "stac" / "pc_sentinel-2-l2a.collection.json").read_text())
    items = json.loads((SHARED_DATA / "stac" / "pc_s2l2a_35MNM_13items.geojson").read_text())["features"]
    pgstac.load([collection], items)
    catalog = pystac.Catalog("pc", "real PC items")
    for item in items:
        catalog.add_item(pystac.Item.from_dict({**item, "links": []}))  # no links to the real PC
    catalog.normalize_and_save(str(tmp_path / "cat"), pystac.CatalogType.SELF_CONTAINED)
    # observations in the tile, on the items' dates, with a cloud-cover filter
    west, south, east, north = items[0]["bbox"]
    dates = sorted({i["properties"]["datetime"][:10] for i in items})
    with open(tmp_path / "obs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "y", "date", "label"])
        for k, date in enumerate(dates):
            writer.writerow([west + (east - west) * (0.3 + 0.05 * k), (south + north) / 2, date, k % 2])
    chips = "chips: {size: 64, resolution: 10, time: {steps: 1, tolerance_days: 3}}"
    for name, source in [
        ("api", f"{{kind: stac, url: '{pgstac.url}', collections: [sentinel-2-l2a], "
                "preset: pc-sentinel-2-l2a, max_cloud_cover: 40}"),
        ("local", f"{{kind: catalog, path: cat/catalog.json, preset: pc-sentinel-2-l2a, max_cloud_cover: 40}}"),
    ]:
        recipe = write(tmp_path, f"{name}.yaml", f"name: {name}\ndata:\n  source: {source}\n"
                       f"  observations: {{kind: points, path: obs.csv}}\n  {chips}\n")
        assert search(recipe, tmp_path / "runs")[0] == 0
    api_items, api_candidates = outputs(tmp_path / "runs", "api")
    local_items, local_candidates = outputs(tmp_path / "runs", "local")
    clear = sorted(i["id"] for i in items if i["properties"]["eo:cloud_cover"] <= 40)
    assert api_items == local_items == clear
    assert api_candidates == local_candidates


@pytest.fixture
def api_recipe(scene, scene_api, tmp_path):
    """A recipe searching pgstac through a fault-injecting proxy."""
    shutil.copy(scene.observations, tmp_path / "obs.csv")
    with FaultProxy(scene_api.url) as proxy:
        def make(extra: str = "", url: str | None = None) -> Path:
            return write(tmp_path, "faulty.yaml", (
                f"name: faulty\ndata:\n  source: {{kind: stac, url: '{url or proxy.url}', "
                f"collections: [hls-demo], preset: hls{extra}}}\n"
                f"  observations: {{kind: points, path: obs.csv}}\n  {TIME}\n"))
        make.proxy = proxy
        yield make


def test_a_lock_file_pins_items_and_a_rerun_needs_no_catalogue(api_recipe, tmp_path):
    recipe = api_recipe()
    assert search(recipe, tmp_path / "first")[0] == 0
    lock = json.loads((tmp_path / "faulty.lock.json").read_text())
    assert len(lock["search"]["items"]) == 6 and "candidates" not in lock["search"]  # recomputed from the items
    api_recipe.proxy.__exit__(None, None, None)  # the catalogue is gone
    code, report = search(recipe, tmp_path / "second")
    assert code == 0 and report["dataset"]["search"]["items"] == 6
    assert outputs(tmp_path / "first", "faulty") == outputs(tmp_path / "second", "faulty")


def test_an_edited_lock_is_refused(api_recipe, tmp_path, capsys):
    recipe = api_recipe()
    assert search(recipe, tmp_path / "first")[0] == 0
    lock_path = tmp_path / "faulty.lock.json"
    lock = json.loads(lock_path.read_text())
    pinned = lock["search"]["items"][0]
    pinned["geometry"]["coordinates"][0][0][0] += 1.0  # a footprint moved by hand
    lock_path.write_text(json.dumps(lock))
    assert search(recipe, tmp_path / "second")[0] == 2
    err = capsys.readouterr().err
    assert "items were edited by hand" in err and "rerun with --force search" in err
    assert search(recipe, tmp_path / "second", "--force", "search")[0] == 0  # the flag it names works
    assert json.loads(lock_path.read_text())["search"]["items"][0]["geometry"] != pinned["geometry"]
    assert search(recipe, tmp_path / "third")[0] == 0  # and the rewritten lock is used


def test_a_one_off_set_on_the_data_never_rewrites_the_committed_lock(api_recipe, tmp_path, capsys):
    recipe = api_recipe()
    assert search(recipe, tmp_path / "runs")[0] == 0
    committed = (tmp_path / "faulty.lock.json").read_bytes()
    assert search(recipe, tmp_path / "runs", "--set", "data.chips.time.tolerance_days=21")[0] == 0
    assert (tmp_path / "faulty.lock.json").read_bytes() == committed
    beside = tmp_path / "runs" / "faulty" / "faulty.lock.json"
    assert beside.exists() and json.loads(beside.read_text())["search"]["key"] != json.loads(committed)["search"]["key"]
    assert "pinned in" in capsys.readouterr().err
    (tmp_path / "faulty.lock.json").unlink()
    (tmp_path / "faulty.lock.json").mkdir()
    capsys.readouterr()
    assert search(recipe, tmp_path / "other")[0] == 2
    err = capsys.readouterr().err
    assert "the lock file's place is a folder" in err and "Traceback" not in err


@pytest.mark.parametrize("faults", [[503, 503], [429], ["drop"], ["slow"]], ids=str)
def test_transient_faults_are_retried(api_recipe, tmp_path, faults):
    recipe = api_recipe(", timeout: 1")
    api_recipe.proxy.faults = list(faults)
    code, report = search(recipe, tmp_path / "runs")
    assert code == 0 and report["dataset"]["search"]["items"] == 6
    assert api_recipe.proxy.faults == []


def test_a_catalogue_that_keeps_failing_exits_3_naming_it(api_recipe, tmp_path, capsys):
    recipe = api_recipe(", retries: 1")
    api_recipe.proxy.faults = [500] * 10
    assert search(recipe, tmp_path / "runs")[0] == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(f"error: catalogue {api_recipe.proxy.url} is unreachable")
    assert "too many 500 error responses" in errors[0]


def test_a_dead_port_exits_3(api_recipe, tmp_path, capsys):
    from tests.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    recipe = api_recipe(", retries: 1", url=dead)
    assert search(recipe, tmp_path / "runs")[0] == 3
    assert f"catalogue {dead} is unreachable" in capsys.readouterr().err


def test_an_empty_result_names_the_filters(api_recipe, tmp_path, capsys):
    recipe = api_recipe(", max_cloud_cover: 50")
    (tmp_path / "obs.csv").write_text("x,y,date,label\n10.5,-70.25,2023-03-01,1\n10.6,-70.2,2023-03-09,0\n")
    code, _ = search(recipe, tmp_path / "runs")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 3 and len(errors) == 1
    assert f"error: {api_recipe.proxy.url}: no items for any of 2 observation(s) in 1 group(s)" in errors[0]
    assert "2023-01-10 .. 2023-03-29, eo:cloud_cover <= 50" in errors[0]
