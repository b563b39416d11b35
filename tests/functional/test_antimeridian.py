"""Footprints, chips and label polygons across the antimeridian (lon +-180).

The items are a real Planetary Computer Sentinel-2 item (../shared/data) with its real tile
footprint moved onto 180 degrees, written the two ways catalogues publish such tiles: as
GeoJSON and STAC ask (RFC 7946 3.1.9: a MultiPolygon split at 180) and unsplit (a ring whose
longitudes jump from 179.x to -179.x). Both must serve observations either side of 180, and
never the rest of the world (an unsplit ring read as-is covers -179.x .. 179.x). The same
searches go to a real STAC API (pgstac), whose bbox cannot cross 180.
"""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
from shapely.geometry import MultiPolygon, Polygon, box, mapping

from instageo.data.catalogue import ApiCatalogue, LocalCatalogue, Query, point_inside
from instageo.data.observations import Observation
from tests.conftest import SHARED_DATA

SHIFT = 179.6 - 27.0  # the real tile 35MNM starts at lon 27.0: moved to start at 179.6
POINTS = {"west of 180": (179.9, True), "east of 180": (-179.8, True), "lon 0": (0.0, False),
          "lon 170": (170.0, False), "lon -170": (-170.0, False)}


def real_item() -> dict:
    items = json.loads((SHARED_DATA / "stac" / "pc_s2l2a_35MNM_13items.geojson").read_text())["features"]
    return copy.deepcopy(items[0])


def moved_ring(item: dict) -> list[tuple[float, float]]:
    """The real footprint moved east by SHIFT: longitudes from 179.6 to about 180.6."""
    return [(lon + SHIFT, lat) for lon, lat in item["geometry"]["coordinates"][0]]


def unsplit(item: dict) -> dict:
    ring = [((lon + 180) % 360 - 180, lat) for lon, lat in moved_ring(item)]  # jumps at 180
    return {**item, "id": item["id"] + "-unsplit", "geometry": {"type": "Polygon", "coordinates": [ring]}}


def split(item: dict) -> dict:
    """The RFC 7946 form, cut with plain shapely box intersections (not our code)."""
    whole = Polygon(moved_ring(item))
    west = whole.intersection(box(0, -90, 180, 90))
    east = Polygon([(x - 360, y) for x, y in whole.intersection(box(180, -90, 360, 90)).exterior.coords])
    geometry = mapping(MultiPolygon([west, east]))
    return {**item, "id": item["id"] + "-split", "geometry": json.loads(json.dumps(geometry))}


def lat_of(item: dict) -> float:
    lats = [lat for _, lat in item["geometry"]["coordinates"][0]]
    return (min(lats) + max(lats)) / 2


def query_at(lon: float, lat: float, date: str, half: float = 0.01) -> Query:
    day = dt.date.fromisoformat(date[:10])
    return Query((lon - half, lat - half, lon + half, lat + half), day, day)


@pytest.fixture(scope="module")
def items():
    item = real_item()
    return item, [unsplit(item), split(item)]


def test_a_local_catalogue_serves_both_sides_of_180_and_never_the_rest_of_the_world(items, tmp_path):
    real, moved = items
    path = tmp_path / "items.geojson"  # an ItemCollection file as the catalogue
    path.write_text(json.dumps({"type": "FeatureCollection", "features": moved}))
    catalogue = LocalCatalogue(path)
    for name, (lon, expected) in POINTS.items():
        found = {i["id"] for i in catalogue.search(query_at(lon, lat_of(real), real["properties"]["datetime"]))}
        assert found == ({i["id"] for i in moved} if expected else set()), name


def test_a_chip_straddling_180_finds_the_tile_on_the_other_side(items, tmp_path):
    """A point at 179.9999: its chip box reaches past 180, into the east part only."""
    from instageo.data.search import serving
    from instageo.recipe import load_recipe

    real, moved = items
    east_only = copy.deepcopy(moved[1])
    east_only["id"] = "east-only"
    east_only["geometry"] = {"type": "Polygon", "coordinates": [east_only["geometry"]["coordinates"][1][0]]}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndata:\n  source: {kind: demo}\n  chips: {size: 16, time: {tolerance_days: 5}}\n"
                      "task: {classes: [a, b]}\n")
    day = dt.date.fromisoformat(real["properties"]["datetime"][:10])
    near = Observation("near", 179.9999, lat_of(real), day)
    far = Observation("far", 179.0, lat_of(real), day)  # its chip stays west of 180
    chosen = serving([east_only], [near, far], load_recipe(recipe))
    assert [[i["id"] for i in c] for c in chosen] == [["east-only"], []]


def test_a_stac_api_is_asked_for_both_sides_of_180(items, pgstac):
    real, moved = items
    collection = json.loads((SHARED_DATA / "stac" / "pc_sentinel-2-l2a.collection.json").read_text())
    collection = {**collection, "id": "s2-antimeridian", "links": []}
    stored = [{**copy.deepcopy(i), "collection": "s2-antimeridian", "links": []} for i in moved[1:]]
    pgstac.load([collection], stored)  # pgstac stores the split footprint (the valid form)
    catalogue = ApiCatalogue(pgstac.url)
    date = real["properties"]["datetime"]
    straddling = Query((179.95, lat_of(real) - 0.01, 180.05, lat_of(real) + 0.01),
                       dt.date.fromisoformat(date[:10]), dt.date.fromisoformat(date[:10]), ("s2-antimeridian",))
    assert [i["id"] for i in catalogue.search(straddling)] == [stored[0]["id"]]
    for name, (lon, expected) in POINTS.items():
        query = query_at(lon, lat_of(real), date)
        query = Query(query.bbox, query.start, query.end, ("s2-antimeridian",))
        assert bool(catalogue.search(query)) == expected, name


def test_a_label_polygon_across_180_is_centred_on_it_not_at_lon_0(tmp_path):
    from instageo.data.observations import Labels, read_polygons
    from instageo.recipe.models import PolygonObservations

    ring = [(179.9, -16.6), (-179.9, -16.6), (-179.9, -16.4), (179.9, -16.4), (179.9, -16.6)]
    path = tmp_path / "fields.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"label": "b", "date": "2024-05-01"},
        "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    spec = PolygonObservations(kind="polygons", path=path)
    [observation] = read_polygons(spec, Labels(("a", "b")), tmp_path / "polygons.geojson")
    assert abs(abs(observation.lon) - 180) < 0.1 and -16.6 < observation.lat < -16.4, observation
    written = json.loads((tmp_path / "polygons.geojson").read_text())["features"][0]["geometry"]
    assert written["type"] == "MultiPolygon"  # split at 180, as RFC 7946 asks
    assert abs(point_inside(MultiPolygon([box(179.9, 0, 180, 1), box(-180, 0, -179.5, 1)]))[0]) > 179.5
