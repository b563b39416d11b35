"""What a catalogue preset is (presets.py holds the sensors' table): which asset holds each
band, how to scale it, and where the cloud mask is.

A preset turns a STAC item (as the catalogue serves it) into ``ResolvedItem``: per common band
name (blue, green, red, nir, nir08, swir16, swir22, vv, vh ...) an href with scale, offset and
nodata, plus the mask asset and how to decode it. Values from the item's own ``raster:bands``
win over the preset's defaults, so catalogues that document their scaling are read as
documented.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from instageo.errors import InputError

# fmask: HLS v2 bit field; cfmask: classic Fmask values (0 clear, 1 water, 2 shadow, 3 snow,
# 4 cloud, 255 fill); scl: Sentinel-2 scene classification.
MaskKind = Literal["fmask", "cfmask", "scl", "qa_pixel"]


@dataclass(frozen=True)
class BandAsset:
    href: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    band: int = 1  # 1-based band index inside the file


@dataclass(frozen=True)
class ResolvedItem:
    id: str
    collection: str
    datetime: str
    cloud_cover: float | None
    bbox: tuple[float, float, float, float]
    geometry: dict
    bands: dict[str, BandAsset]
    mask: BandAsset | None
    mask_kind: MaskKind | None

    @property
    def date(self) -> dt.date:
        return dt.date.fromisoformat(self.datetime[:10])

    def as_dict(self) -> dict:
        """As JSON-ready values: dataclasses.asdict, but the geometry not deep-copied (it
        cost 0.25 ms an item)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["bands"] = {name: asdict(asset) for name, asset in self.bands.items()}
        values["mask"] = None if self.mask is None else asdict(self.mask)
        return values


@dataclass(frozen=True)
class Preset:
    """How one catalogue lays out one family of collections."""

    name: str
    description: str
    bands: Mapping[str, str]  # common band name -> asset key
    collection_bands: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    mask: tuple[str, MaskKind] | None = None  # (asset key, decoding)
    signing: Literal["planetary_computer"] | None = None  # hrefs signed at read time
    auth: Literal["earthdata"] | None = None  # token sent at read time
    offset_for: Callable[[Mapping[str, Any]], float] | None = None  # from item properties
    # the recipe's own scale / offset / nodata, per band: they win over the item's raster:bands
    declared: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def band_keys(self, collection: str) -> Mapping[str, str]:
        return self.collection_bands.get(collection, self.bands)

    def asset_keys(self, collection: str, bands: list[str]) -> set[str]:
        """The item assets that reading ``bands`` (and the mask) touches."""
        keys = self.band_keys(collection)
        assets = {keys[b].partition("#")[0] for b in bands if b in keys}
        if self.mask:
            assets.add(self.mask[0])
        return assets

    def resolve(self, item: Mapping[str, Any], bands: list[str]) -> ResolvedItem:
        """The assets of ``bands`` in a STAC item dict; a clear error when one is missing."""
        keys = self.band_keys(item.get("collection", ""))
        assets = item.get("assets", {})
        resolved = {}
        for band in bands:
            if band not in keys:
                raise InputError(
                    f"band '{band}' is not valid for preset '{self.name}', "
                    f"should be one of {sorted(keys)}"
                )
            key, _, selector = keys[band].partition("#")
            if key not in assets:
                raise InputError(
                    f"item {item.get('id')} ({item.get('collection')}) has no asset '{key}' "
                    f"for band '{band}'; its assets: {sorted(assets)}"
                )
            index = _band_index(assets[key], selector, item.get("id"))
            resolved[band] = self._asset(assets[key], item.get("properties", {}), index, self.declared.get(band, {}))
        mask = None
        if self.mask is not None and self.mask[0] in assets:
            raw = assets[self.mask[0]]
            mask = BandAsset(raw["href"], nodata=nodata_value(_raster_band(raw).get("nodata")))
        properties = item.get("properties", {})
        cloud = properties.get("eo:cloud_cover")
        return ResolvedItem(
            id=item["id"],
            collection=item.get("collection", ""),
            datetime=properties.get("datetime") or properties.get("start_datetime"),
            cloud_cover=None if cloud is None else float(cloud),
            bbox=tuple(item["bbox"]),
            geometry=item["geometry"],
            bands=resolved,
            mask=mask,
            mask_kind=self.mask[1] if mask is not None else None,
        )

    def _asset(self, asset: Mapping[str, Any], properties: Mapping[str, Any], index: int = 1,
               declared: Mapping[str, float] | None = None) -> BandAsset:
        documented = {**_raster_band(asset, index), **(declared or {})}
        offset = self.offset_for(properties) if self.offset_for else self.offset
        nodata = documented.get("nodata", self.nodata)
        return BandAsset(
            href=asset["href"],
            scale=float(documented.get("scale", self.scale)),
            offset=float(documented.get("offset", offset)),
            nodata=nodata_value(nodata),
            band=index,
        )


def stac_nodata(value: float | None) -> float | str | None:
    """A nodata value as STAC's raster extension spells it: NaN and infinities are the strings
    "nan", "inf" and "-inf" (JSON has no numbers for them), everything else a number."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinity spelt as STAC does (``stac_nodata``), so it is
    valid JSON and reads back the same (a float NaN would be written as null by pydantic)."""
    if isinstance(value, float):
        return stac_nodata(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def nodata_value(value: float | str | None) -> float | None:
    """A raster:bands nodata as a float: a number, or one of STAC's "nan", "inf", "-inf"."""
    return None if value is None else float(value)


def _raster_band(asset: Mapping[str, Any], index: int = 1) -> Mapping[str, Any]:
    bands = asset.get("raster:bands") or []
    return bands[index - 1] if len(bands) >= index else {}


def _band_index(asset: Mapping[str, Any], selector: str, item_id: Any) -> int:
    """``asset#2`` or ``asset#VV`` (a name from the asset's eo:bands) -> 1-based index."""
    if not selector:
        return 1
    if selector.isdigit():
        return int(selector)
    names = [b.get("name") for b in asset.get("eo:bands", [])]
    if selector not in names:
        raise InputError(f"item {item_id}: asset band '{selector}' not found; its bands: {names}")
    return names.index(selector) + 1


def s2_baseline_offset(properties: Mapping[str, Any]) -> float:
    # From processing baseline 04.00 (25 Jan 2022) L2A digital numbers carry +1000, i.e. a
    # reflectance offset of -0.1; catalogues without raster:bands leave it to the reader.
    baseline = str(properties.get("s2:processing_baseline", "00.00"))
    return -0.1 if baseline >= "04.00" else 0.0
