"""Catalogue presets: which asset holds each band, how to scale it, and where the cloud mask is.

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
from dataclasses import asdict, dataclass, field, fields, replace
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


def _s2_baseline_offset(properties: Mapping[str, Any]) -> float:
    # From processing baseline 04.00 (25 Jan 2022) L2A digital numbers carry +1000, i.e. a
    # reflectance offset of -0.1; catalogues without raster:bands leave it to the reader.
    baseline = str(properties.get("s2:processing_baseline", "00.00"))
    return -0.1 if baseline >= "04.00" else 0.0


# HLS harmonises Landsat B05 with Sentinel-2 B8A (narrow NIR), and Prithvi-EO was pretrained on
# that pair, so "nir" means narrow NIR in both HLS products.
HLS_L30 = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "nir": "B05",
           "nir08": "B05", "swir16": "B06", "swir22": "B07", "cirrus": "B09"}
HLS_S30 = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
           "rededge2": "B06", "rededge3": "B07", "nir": "B8A", "nir08": "B8A",
           "nir_broad": "B08", "swir16": "B11", "swir22": "B12", "cirrus": "B10"}
S2_KEYS = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
           "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
           "swir16": "B11", "swir22": "B12"}
EARTH_SEARCH_S2 = {name: name for name in (
    "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
    "nir09", "swir16", "swir22")}

# Landsat band numbers differ between sensors: TM/ETM+ (Landsat 4-7) and OLI (Landsat 8-9).
LANDSAT_TM = {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir16": 5, "swir22": 7}
LANDSAT_OLI = {"coastal": 1, "blue": 2, "green": 3, "red": 4, "nir": 5, "swir16": 6, "swir22": 7}

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in [
        Preset(
            "hls", "HLS v2 L30/S30 as NASA CMR-STAC LPCLOUD serves it (HLSL30_2.0, HLSS30_2.0)",
            bands=HLS_L30,
            collection_bands={"HLSL30_2.0": HLS_L30, "HLSS30_2.0": HLS_S30, "HLSL30.v2.0": HLS_L30,
                              "HLSS30.v2.0": HLS_S30},
            scale=1e-4, nodata=-9999, mask=("Fmask", "fmask"), auth="earthdata",
        ),
        Preset(
            "pc-hls", "HLS v2 on Planetary Computer (hls2-l30, hls2-s30)",
            bands=HLS_L30, collection_bands={"hls2-l30": HLS_L30, "hls2-s30": HLS_S30},
            scale=1e-4, nodata=-9999, mask=("Fmask", "fmask"), signing="planetary_computer",
        ),
        Preset(
            "pc-sentinel-2-l2a", "Sentinel-2 L2A on Planetary Computer (sentinel-2-l2a)",
            bands=S2_KEYS, scale=1e-4, nodata=0, mask=("SCL", "scl"),
            signing="planetary_computer", offset_for=_s2_baseline_offset,
        ),
        Preset(
            "pc-sentinel-1-rtc", "Sentinel-1 RTC on Planetary Computer (sentinel-1-rtc), linear power",
            bands={"vv": "vv", "vh": "vh", "hh": "hh", "hv": "hv"}, nodata=-32768,
            signing="planetary_computer",
        ),
        Preset(
            "earth-search-s2", "Sentinel-2 L2A on Earth Search v1 (sentinel-2-l2a, sentinel-2-c1-l2a)",
            bands=EARTH_SEARCH_S2, scale=1e-4, nodata=0, mask=("scl", "scl"),
            offset_for=_s2_baseline_offset,
        ),
        # local files, as `instarun catalog build` names their assets (the file name's suffix)
        Preset("s2-l1c", "Sentinel-2 L1C band files (*_B01.jp2 .. *_B12, *_B8A; TOA reflectance x 10000)",
               bands=S2_KEYS, scale=1e-4, nodata=0),
        Preset("s2-l2a", "Sentinel-2 L2A band files (*_B01 .. *_B12, *_B8A, *_SCL)",
               bands=S2_KEYS, scale=1e-4, nodata=0, mask=("SCL", "scl"), offset_for=_s2_baseline_offset),
        Preset("hls-l30", "HLS v2 L30 files (HLS.L30.*.B01.tif .. B11, Fmask)",
               bands=HLS_L30, scale=1e-4, nodata=-9999, mask=("Fmask", "fmask")),
        Preset("hls-s30", "HLS v2 S30 files (HLS.S30.*.B01.tif .. B12, B8A, Fmask)",
               bands=HLS_S30, scale=1e-4, nodata=-9999, mask=("Fmask", "fmask")),
        Preset("landsat-c2-l2-tm", "Landsat 4-7 Collection 2 Level-2 files (*_SR_B1 .. *_SR_B7, *_QA_PIXEL)",
               bands={b: f"SR_B{n}" for b, n in LANDSAT_TM.items()}, scale=2.75e-5, offset=-0.2, nodata=0,
               mask=("QA_PIXEL", "qa_pixel")),
        Preset("landsat-c2-l2-oli", "Landsat 8-9 Collection 2 Level-2 files (*_SR_B1 .. *_SR_B7, *_QA_PIXEL)",
               bands={b: f"SR_B{n}" for b, n in LANDSAT_OLI.items()}, scale=2.75e-5, offset=-0.2, nodata=0,
               mask=("QA_PIXEL", "qa_pixel")),
        Preset("landsat-espa-sr", "Landsat 4-7 surface reflectance as ESPA wrote it (*_b1 .. *_b7 x 10000, "
               "*_fmask with classic Fmask values)",
               bands={b: f"b{n}" for b, n in LANDSAT_TM.items()}, scale=1e-4, nodata=-9999, mask=("fmask", "cfmask")),
    ]
}


def custom_preset(bands: Mapping[str, str], mask: tuple[str, MaskKind] | None = None) -> Preset:
    """A preset for any other catalogue, from the recipe's band -> asset key map."""
    return Preset("custom", "band map given in the recipe", bands=dict(bands), mask=mask)


CATALOGUE_PRESET = "instageo:preset"  # what `catalog build` writes into catalog.json


def preset_for(source) -> Preset | None:
    """The preset of a recipe's data source, with the recipe's own scale / offset / nodata;
    None for a STAC API that no preset fits. A local catalogue says its sensor (catalog
    build writes it); one that does not, with no preset or bands given, is an error."""
    if source.kind == "demo":
        return PRESETS["hls"]
    if source.bands:
        preset = custom_preset(source.bands, (source.mask, source.mask_kind) if source.mask else None)
    elif source.preset:
        preset = PRESETS[source.preset]
    elif source.kind == "catalog":
        preset = PRESETS[catalogue_preset(source.path)]
    else:
        guessed = guess_preset(source.url, source.collections)
        preset = PRESETS[guessed] if guessed else None
    declared = declared_scaling(source, preset)
    return replace(preset, declared=declared) if preset is not None and declared else preset


def catalogue_preset(path) -> str:
    """The preset a local catalogue names, or an error listing the choices."""
    import json

    try:
        named = json.loads(open(path, encoding="utf-8").read()).get(CATALOGUE_PRESET)
    except (OSError, ValueError, AttributeError):
        named = None
    if named not in PRESETS:
        raise InputError(
            f"data.source: {path} does not say which sensor its files come from; set data.source.preset "
            f"(one of {sorted(PRESETS)}) or data.source.bands (common band name -> asset key)"
        )
    return named


def declared_scaling(source, preset: Preset | None) -> dict[str, dict[str, float]]:
    """data.source.scale / offset / nodata (one value for all bands, or per band) as the
    per-band raster:bands values they stand for."""
    bands = list(preset.bands) if preset is not None else []
    declared: dict[str, dict[str, float]] = {}
    for key in ("scale", "offset", "nodata"):
        value = getattr(source, key, None)
        if value is None:
            continue
        unknown = sorted(set(value) - set(bands)) if isinstance(value, dict) else []
        if unknown:
            raise InputError(f"data.source.{key}: band '{unknown[0]}' is not valid for preset "
                             f"'{preset.name if preset else None}', should be one of {sorted(bands)}")
        for band in bands:
            if isinstance(value, dict):
                if band in value:
                    declared.setdefault(band, {})[key] = float(value[band])
            else:
                declared.setdefault(band, {})[key] = float(value)
    return declared


def guess_preset(url: str, collections: list[str]) -> str | None:
    """The preset for a well-known catalogue URL and collection, or None."""
    first = collections[0] if collections else ""
    if "planetarycomputer" in url:
        if first.startswith("hls2-"):
            return "pc-hls"
        if first == "sentinel-1-rtc":
            return "pc-sentinel-1-rtc"
        if first == "sentinel-2-l2a":
            return "pc-sentinel-2-l2a"
    if "earth-search" in url and first.startswith("sentinel-2"):
        return "earth-search-s2"
    if "cmr.earthdata.nasa.gov" in url and first.startswith("HLS"):
        return "hls"
    return None
