"""Item search with one meaning over a STAC API (pystac-client) and a static catalogue on disk.

A query matches an item when: its collection is one of ``collections`` (if given), its
geometry intersects ``bbox``, its datetime falls in [start, end] (whole days, UTC), and, when
``max_cloud_cover`` is below 100, it reports ``eo:cloud_cover`` at or below it. The API path
sends what the server supports and checks the rest itself, so both paths return the same items.

Footprints and boxes that cross the antimeridian are split there (as GeoJSON, RFC 7946 3.1.9,
and the STAC spec ask): a footprint drawn from lon 179.5 to -179.5 without the split would
otherwise be read as the band around the rest of the world.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instageo.errors import DataSourceError, InputError

log = logging.getLogger("instageo.search")


@dataclass(frozen=True)
class Query:
    bbox: tuple[float, float, float, float]
    start: dt.date
    end: dt.date
    collections: tuple[str, ...] | None = None
    max_cloud_cover: float = 100.0

    @property
    def interval(self) -> str:
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"

    def describe(self) -> str:
        bbox = ", ".join(f"{v:.4f}" for v in self.bbox)
        cloud = f", eo:cloud_cover <= {self.max_cloud_cover:g}" if self.max_cloud_cover < 100 else ""
        return f"bbox [{bbox}], {self.start} .. {self.end}{cloud}"

    def matches(self, item: dict[str, Any]) -> bool:
        return self.matches_properties(item) and footprint(item).intersects(lonlat_box(*self.bbox))

    def matches_properties(self, item: dict[str, Any]) -> bool:
        """The query's tests but the footprint's."""
        if self.collections and item.get("collection") not in self.collections:
            return False
        when = item_date(item)
        if when is None or not (self.start <= when <= self.end):
            return False
        if self.max_cloud_cover < 100:
            cloud = item.get("properties", {}).get("eo:cloud_cover")
            if cloud is None or float(cloud) > self.max_cloud_cover:
                return False
        return True

    def crosses_antimeridian(self) -> bool:
        return self.bbox[0] < -180 or self.bbox[2] > 180


def lonlat_box(west: float, south: float, east: float, north: float):
    """A lon/lat box as a geometry; one reaching past +-180 wraps round (two parts)."""
    from shapely.geometry import box

    whole = box(west, south, east, north)
    return whole if -180 <= west and east <= 180 else _wrapped(whole)


def footprint(item: dict[str, Any]):
    """An item's geometry as shapely, split at the antimeridian where it crosses it."""
    from shapely.geometry import shape

    return split_at_antimeridian(shape(item["geometry"]))


def split_at_antimeridian(geometry):
    """A lon/lat (multi)polygon cut at +-180 where its rings jump across it (a polygon drawn
    from 179.5 to -179.5) or reach past it, each part moved back onto the globe."""
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    polygons = list(getattr(geometry, "geoms", [geometry]))
    if not all(isinstance(p, Polygon) for p in polygons):
        return geometry
    fixed, changed = [], False
    for polygon in polygons:
        rings = [polygon.exterior.coords, *(ring.coords for ring in polygon.interiors)]
        unwrapped = [_unwrapped(ring) for ring in rings]
        if all(ring is None for ring in unwrapped):
            fixed.append(polygon)
        else:
            exterior, *holes = [new or list(old) for new, old in zip(unwrapped, rings)]
            fixed.append(_wrapped(Polygon(exterior, holes)))
            changed = True
    return unary_union(fixed) if changed else geometry


def point_inside(geometry) -> tuple[float, float]:
    """(lon, lat) of a point inside a lon/lat geometry that may be split at the antimeridian:
    found with its western parts moved east by 360 degrees (so the pieces are one shape),
    then put back in [-180, 180]."""
    from shapely.affinity import translate
    from shapely.ops import unary_union

    parts = list(getattr(geometry, "geoms", [geometry]))
    west, _, east, _ = geometry.bounds
    if west <= -179.999 and east >= 179.999 and len(parts) > 1:
        geometry = unary_union([translate(p, 360) if p.bounds[2] <= 0 else p for p in parts])
    point = geometry.representative_point()
    return ((point.x + 180) % 360 - 180, point.y)


def _unwrapped(coords) -> list[tuple[float, float]] | None:
    """The ring with longitudes made continuous (a jump over 180 degrees between two vertices
    is a crossing of the antimeridian), or None when it needs nothing."""
    points = [tuple(p[:2]) for p in coords]
    out, shift = [points[0]], 0.0
    for (lon0, _), (lon1, lat1) in zip(points, points[1:]):
        step = lon1 - lon0
        if step > 180:
            shift -= 360
        elif step < -180:
            shift += 360
        out.append((lon1 + shift, lat1))
    lons = [p[0] for p in out]
    if shift == 0 and min(lons) >= -180 and max(lons) <= 180:
        return None
    return out


def _wrapped(polygon):
    """A polygon with longitudes past +-180 cut there, each part moved back onto the globe."""
    from shapely.affinity import translate
    from shapely.geometry import box
    from shapely.ops import unary_union

    parts = []
    for shift in (-720, -360, 0, 360, 720):
        part = polygon.intersection(box(-180 + shift, -90, 180 + shift, 90))
        if not part.is_empty:
            parts.append(translate(part, -shift))
    return unary_union(parts)


def item_date(item: dict[str, Any]) -> dt.date | None:
    properties = item.get("properties", {})
    stamp = properties.get("datetime") or properties.get("start_datetime")
    return dt.date.fromisoformat(stamp[:10]) if stamp else None


class LocalCatalogue:
    """A static STAC catalogue on disk, read once and searched in memory (footprints indexed
    in an STRtree)."""

    def __init__(self, path: Path, name: str | None = None, relative_to: Path | None = None):
        import os

        self.path = Path(path).resolve()
        self._name = name
        self._index = None
        self.items = []
        for record in _read_items(self.path):
            if relative_to is not None:
                for asset in record["assets"].values():
                    asset["href"] = os.path.relpath(asset["href"], relative_to)
            self.items.append(record)

    @property
    def name(self) -> str:
        return self._name or str(self.path)

    def fingerprint(self) -> str:
        """SHA-256 of every item (ids, dates, footprints, assets) and of each local asset
        file's identity (size and modification time: an asset replaced in place changes it;
        cheap, unlike hashing every raster). Two catalogues with equal catalog.json files but
        other scenes differ here."""
        import hashlib

        from instageo.files import canonical_json

        files = []
        for item in self.items:
            for key, asset in sorted(item["assets"].items()):
                href = Path(asset["href"])
                if "://" not in asset["href"] and href.is_absolute():
                    stat = href.stat() if href.exists() else None
                    files.append([item["id"], key, stat and stat.st_size, stat and stat.st_mtime_ns])
        return hashlib.sha256(canonical_json([self.items, files]).encode("utf-8")).hexdigest()

    def search(self, query: Query) -> list[dict[str, Any]]:
        from shapely import STRtree

        if self._index is None:
            self._index = STRtree([footprint(item) for item in self.items])
        near = self._index.query(lonlat_box(*query.bbox), predicate="intersects")
        return sorted((self.items[i] for i in near if query.matches_properties(self.items[i])), key=_order)


class PinnedCatalogue:
    """The items a lock file pins, searched like the catalogue they came from (the same
    queries then find the same items for the same observations)."""

    def __init__(self, items: list[dict[str, Any]], name: str):
        self.items, self.name = items, name

    def search(self, query: Query) -> list[dict[str, Any]]:
        return sorted((item for item in self.items if query.matches(item)), key=_order)


def _read_items(path: Path) -> list[dict[str, Any]]:
    """Every item under a STAC catalogue or collection file (or in an ItemCollection),
    following child and item links (relative hrefs against the file that holds them), asset hrefs made absolute.
    (Plain JSON reads: pystac's object model took 1.5 ms an item, 7 s for 4,700 items.)"""
    import os

    items, seen, todo = [], set(), [Path(path)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            document = json.loads(current.read_bytes())
            kind = document["type"]
            links = document.get("links", [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            why = "no 'type' field" if isinstance(exc, (KeyError, TypeError, AttributeError)) else exc
            raise InputError(f"{current}: not a readable STAC catalogue ({why})") from None
        features = document.get("features", []) if kind == "FeatureCollection" else [document]
        if kind in ("Feature", "FeatureCollection"):  # an item, or an ItemCollection of them
            for feature in features:
                record = {k: v for k, v in feature.items() if k != "links"}
                for asset in record.get("assets", {}).values():
                    href = asset.get("href", "")
                    if "://" not in href and not os.path.isabs(href):
                        asset["href"] = os.path.normpath(current.parent / href)
                items.append(record)
            continue
        for link in links:
            href = link.get("href", "")
            if link.get("rel") in ("item", "child") and href:
                if "://" in href:
                    raise InputError(f"{current}: links to {href}; a local catalogue's links must be files")
                todo.append((current.parent / href).resolve())
    items.sort(key=lambda item: item["id"])
    return items


class ApiCatalogue:
    """A STAC API. Retries 429/5xx and timeouts with backoff; gives up with exit code 3."""

    def __init__(self, url: str, retries: int = 4, backoff: float = 0.5, timeout: float = 30.0):
        self.url = url
        self._retries, self._backoff, self._timeout = retries, backoff, timeout
        self._client = None

    @property
    def name(self) -> str:
        return self.url

    def _open(self):
        if self._client is None:
            from pystac_client import Client
            from pystac_client.stac_api_io import StacApiIO
            from urllib3.util.retry import Retry

            retry = Retry(total=self._retries, backoff_factor=self._backoff,
                          status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                          respect_retry_after_header=True)
            io = StacApiIO(max_retries=retry, timeout=self._timeout)
            # Client.open resets the StacApiIO's timeout to its own argument: pass it there
            self._client = self._guard(lambda: self._again_if_cut(
                lambda: Client.open(self.url, stac_io=io, timeout=self._timeout)))
        return self._client

    def search(self, query: Query) -> list[dict[str, Any]]:
        from pystac_client import ConformanceClasses

        client = self._open()
        arguments: dict[str, Any] = dict(datetime=query.interval, limit=100)
        if query.crosses_antimeridian():  # a bbox past 180 is refused by APIs: its two parts
            from shapely.geometry import mapping

            arguments["intersects"] = mapping(lonlat_box(*query.bbox))
        else:
            arguments["bbox"] = list(query.bbox)
        if query.collections:
            arguments["collections"] = list(query.collections)
        if query.max_cloud_cover < 100 and client.conforms_to(ConformanceClasses.QUERY):
            arguments["query"] = {"eo:cloud_cover": {"lte": query.max_cloud_cover}}
        found = self._guard(lambda: self._again_if_cut(
            lambda: list(client.search(**arguments).items_as_dicts())))
        return sorted((i for i in found if query.matches(i)), key=_order)

    def _again_if_cut(self, call):
        """``call`` again (from the first page) when an answer's body was cut off mid-way: the
        HTTP retries above cover statuses, timeouts and refused or dropped connections, but
        not a body that stops short of its length."""
        import time

        from requests.exceptions import ChunkedEncodingError, ContentDecodingError

        def cut(exc: BaseException | None) -> bool:  # pystac-client wraps it in an APIError
            while exc is not None:
                if isinstance(exc, (ChunkedEncodingError, ContentDecodingError)):
                    return True
                exc = exc.__cause__ or exc.__context__
            return False

        for attempt in range(self._retries + 1):
            try:
                return call()
            except Exception as exc:
                if attempt == self._retries or not cut(exc):
                    raise
                log.warning("catalogue %s: an answer was cut off mid-body; searching again", self.url)
                time.sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _guard(self, call):
        import requests
        from pystac_client.exceptions import APIError

        try:
            return call()
        except (requests.RequestException, APIError, OSError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DataSourceError(f"catalogue {self.url} is unreachable: {reason}") from None


def _order(item: dict[str, Any]) -> tuple[str, str]:
    return (item.get("properties", {}).get("datetime") or "", item["id"])
