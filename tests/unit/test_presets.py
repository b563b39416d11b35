"""Presets resolve the right assets, scales and masks on real item documents."""

import json

import pytest
import yaml

from instageo.recipe.presets import PRESETS, guess_preset
from instageo.errors import InputError
from tests.conftest import SHARED_DATA

STAC = SHARED_DATA / "stac"
PRITHVI_BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]


def features(name: str) -> list[dict]:
    document = json.loads((STAC / name).read_text())
    return document["features"] if "features" in document else document


def cassette_items(name: str, collection: str) -> list[dict]:
    """Items from the recorded API responses (VCR cassettes) of real searches."""
    items = []
    for interaction in yaml.safe_load((STAC / name).read_text())["interactions"]:
        body = json.loads(interaction["response"]["body"]["string"])
        items += [f for f in body.get("features", []) if f.get("collection") == collection and "assets" in f]
    return items


def item_from_collection(name: str, collection_id: str) -> dict:
    """An item whose assets are the collection's item_assets (real keys and metadata)."""
    collection = json.loads((STAC / name).read_text())
    assets = {k: {**v, "href": f"https://example.invalid/{k}.tif"} for k, v in collection["item_assets"].items()}
    return {"id": "x", "collection": collection_id, "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"datetime": "2023-01-01T00:00:00Z", "eo:cloud_cover": 5}, "assets": assets}


def test_planetary_computer_s2_uses_baseline_offset_and_scl():
    items = features("pc_s2l2a_2024.json") + features("pc_s2l2a_35MNM_13items.geojson")
    preset = PRESETS["pc-sentinel-2-l2a"]
    for item in items:
        resolved = preset.resolve(item, PRITHVI_BANDS + ["nir08"])
        baseline = item["properties"]["s2:processing_baseline"]
        assert resolved.bands["nir"].href.endswith("_B08_10m.tif")
        assert resolved.bands["nir08"].href.endswith("_B8A_20m.tif")
        assert resolved.bands["swir22"].href.endswith("_B12_20m.tif")
        assert resolved.bands["red"].scale == 1e-4
        assert resolved.bands["red"].offset == (-0.1 if baseline >= "04.00" else 0.0)
        assert resolved.mask.href.endswith("_SCL_20m.tif") and resolved.mask_kind == "scl"
        assert resolved.cloud_cover == item["properties"]["eo:cloud_cover"]
    baselines = {i["properties"]["s2:processing_baseline"] for i in items}
    assert baselines == {"02.12", "05.10"}  # both sides of the 04.00 offset change are covered


def test_earth_search_reads_scale_and_offset_from_raster_bands():
    items = features("es_v1_s2l2a_3items.json") + cassette_items("es_v1_search_s2l2a_c1l2a.yaml", "sentinel-2-c1-l2a")
    assert {i["collection"] for i in items} == {"sentinel-2-l2a", "sentinel-2-c1-l2a"}
    assert guess_preset("https://earth-search.aws.element84.com/v1", ["sentinel-2-c1-l2a"]) == "earth-search-s2"
    for item in items:
        resolved = PRESETS["earth-search-s2"].resolve(item, PRITHVI_BANDS)
        documented = item["assets"]["red"]["raster:bands"][0]
        assert resolved.bands["red"].href == item["assets"]["red"]["href"]
        assert (resolved.bands["red"].scale, resolved.bands["red"].offset) == (documented["scale"], documented["offset"])
        assert resolved.bands["red"].offset == -0.1 and resolved.bands["red"].nodata == 0
        assert resolved.mask.href == item["assets"]["scl"]["href"]


@pytest.mark.parametrize("collection_file, collection, preset, nir, swir16", [
    ("pc_hls2-l30.collection.json", "hls2-l30", "pc-hls", "B05", "B06"),
    ("pc_hls2-s30.collection.json", "hls2-s30", "pc-hls", "B8A", "B11"),
    ("pc_hls2-l30.collection.json", "HLSL30_2.0", "hls", "B05", "B06"),
    ("pc_hls2-s30.collection.json", "HLSS30_2.0", "hls", "B8A", "B11"),
])
def test_hls_maps_landsat_and_sentinel_bands_and_fmask(collection_file, collection, preset, nir, swir16):
    item = item_from_collection(collection_file, collection)
    resolved = PRESETS[preset].resolve(item, PRITHVI_BANDS)
    assert resolved.bands["nir"].href.endswith(f"/{nir}.tif")
    assert resolved.bands["swir16"].href.endswith(f"/{swir16}.tif")
    assert resolved.bands["blue"].scale == 1e-4 and resolved.bands["blue"].nodata == -9999
    assert resolved.mask.href.endswith("/Fmask.tif") and resolved.mask_kind == "fmask"


def test_known_catalogues_get_their_preset():
    assert guess_preset("https://planetarycomputer.microsoft.com/api/stac/v1", ["hls2-s30"]) == "pc-hls"
    assert guess_preset("https://planetarycomputer.microsoft.com/api/stac/v1", ["sentinel-1-rtc"]) == "pc-sentinel-1-rtc"
    assert guess_preset("https://cmr.earthdata.nasa.gov/stac/LPCLOUD", ["HLSL30_2.0"]) == "hls"
    assert guess_preset("https://example.org/stac", ["whatever"]) is None
    assert PRESETS["pc-sentinel-2-l2a"].signing == "planetary_computer"
    assert PRESETS["hls"].auth == "earthdata"


def test_missing_asset_names_the_item_and_its_assets():
    item = features("es_v1_s2l2a_3items.json")[0]
    with pytest.raises(InputError, match=r"has no asset 'B08' for band 'nir'; its assets: \['aot'"):
        PRESETS["pc-sentinel-2-l2a"].resolve(item, ["nir"])
    with pytest.raises(InputError, match="band 'vv' is not valid for preset 'hls'"):
        PRESETS["hls"].resolve(item, ["vv"])
