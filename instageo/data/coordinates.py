"""The inputs of Prithvi-EO-2.0 TL backbones beyond the pixels (numpy only, so prediction can
build them without torch): per time step the year and day of year (1-366) of the acquisition,
per chip the latitude and longitude of its centre, as the official TL models take them."""

from __future__ import annotations

import datetime as dt

import numpy as np


def temporal(dates: list[str]) -> np.ndarray:
    """(T, 2) float32: year, day of year of each step's acquisition date (ISO, oldest first)."""
    days = [dt.date.fromisoformat(d[:10]) for d in dates]
    return np.array([[d.year, d.timetuple().tm_yday] for d in days], np.float32)


def location(lon: float, lat: float) -> np.ndarray:
    """(2,) float32: lat, lon in degrees (the TL location encoder's order)."""
    return np.array([lat, lon], np.float32)
