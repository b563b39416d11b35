"""Item search with one meaning over a STAC API (pystac-client) and a static catalogue (pystac).

A query matches an item when: its collection is one of ``collections`` (if given), its
geometry intersects ``bbox``, its datetime falls in [start, end] (whole days, UTC), and, when
``max_cloud_cover`` is below 100, it reports ``eo:cloud_cover`` at or below it. The API path
sends what the server supports and checks the rest itself, so both paths return the same items.
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
        from shapely.geometry import box, shape

        if self.collections and item.get("collection") not in self.collections:
            return False
        when = item_date(item)
        if when is None or not (self.start <= when <= self.end):
            return False
        if self.max_cloud_cover < 100:
            cloud = item.get("properties", {}).get("eo:cloud_cover")
            if cloud is None or float(cloud) > self.max_cloud_cover:
                return False
        return shape(item["geometry"]).intersects(box(*self.bbox))


def item_date(item: dict[str, Any]) -> dt.date | None:
    properties = item.get("properties", {})
    stamp = properties.get("datetime") or properties.get("start_datetime")
    return dt.date.fromisoformat(stamp[:10]) if stamp else None


class LocalCatalogue:
    """A static STAC catalogue on disk, read once and searched in memory."""

    def __init__(self, path: Path, name: str | None = None, relative_to: Path | None = None):
        import os

        import pystac
        from pystac.errors import STACError

        self.path = Path(path).resolve()
        self._name = name
        try:
            catalog = pystac.read_file(str(self.path))
            items = list(catalog.get_items(recursive=True)) if hasattr(catalog, "get_items") else []
        except (STACError, OSError, json.JSONDecodeError, KeyError) as exc:
            raise InputError(f"{self.path}: not a readable STAC catalogue ({exc})") from None
        self.items = []
        for item in items:
            item.make_asset_hrefs_absolute()
            record = item.to_dict(include_self_link=False, transform_hrefs=False)
            if relative_to is not None:
                for asset in record["assets"].values():
                    asset["href"] = os.path.relpath(asset["href"], relative_to)
            record.pop("links", None)
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
        return sorted((i for i in self.items if query.matches(i)), key=_order)


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
        arguments: dict[str, Any] = dict(bbox=list(query.bbox), datetime=query.interval, limit=100)
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
