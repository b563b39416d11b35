"""Catalogue presets, sensor by sensor (HLS, Sentinel-2 L2A, Sentinel-1 RTC, Landsat ...),
and how a data source finds its preset. What a preset is and does: preset_types.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from instageo.errors import InputError
from instageo.recipe.preset_types import (  # noqa: F401 (the types' old import path)
    BandAsset, MaskKind, Preset, ResolvedItem, finite_json, nodata_value, s2_baseline_offset, stac_nodata)


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
            signing="planetary_computer", offset_for=s2_baseline_offset,
        ),
        Preset(
            "pc-sentinel-1-rtc", "Sentinel-1 RTC on Planetary Computer (sentinel-1-rtc), linear power",
            bands={"vv": "vv", "vh": "vh", "hh": "hh", "hv": "hv"}, nodata=-32768,
            signing="planetary_computer",
        ),
        Preset(
            "earth-search-s2", "Sentinel-2 L2A on Earth Search v1 (sentinel-2-l2a, sentinel-2-c1-l2a)",
            bands=EARTH_SEARCH_S2, scale=1e-4, nodata=0, mask=("scl", "scl"),
            offset_for=s2_baseline_offset,
        ),
        # local files, as `instarun catalog build` names their assets (the file name's suffix)
        Preset("s2-l1c", "Sentinel-2 L1C band files (*_B01.jp2 .. *_B12, *_B8A; TOA reflectance x 10000)",
               bands=S2_KEYS, scale=1e-4, nodata=0),
        Preset("s2-l2a", "Sentinel-2 L2A band files (*_B01 .. *_B12, *_B8A, *_SCL)",
               bands=S2_KEYS, scale=1e-4, nodata=0, mask=("SCL", "scl"), offset_for=s2_baseline_offset),
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
