"""data.source: where the imagery comes from (the demo scene, a local catalogue, a STAC API)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from instageo.recipe.fields import InputCatalogue, Model, Seed


class DemoSource(Model):
    """A synthetic HLS-like scene generated offline (the embedded default)."""

    kind: Literal["demo"]
    seed: Seed = Field(0, description="random seed of the scene (same seed, same scene)")
    size: int = Field(384, ge=64, le=8192, description="scene width and height in pixels")
    acquisitions: int = Field(12, ge=1, le=365, description="acquisition dates, 16 days apart")
    points: int = Field(200, ge=1, le=1_000_000, description="number of point observations generated")


def _known_preset(name: str | None) -> str | None:
    from instageo.recipe.presets import PRESETS

    if name is not None and name not in PRESETS:
        raise PydanticCustomError(
            "preset", "preset '{name}' is not valid, should be one of {valid}",
            {"name": name, "valid": sorted(PRESETS)},
        )
    return name


PresetName = Annotated[str, AfterValidator(_known_preset)]


PerBand = Union[float, dict[str, float], None]


class AssetsSpec(Model):
    """How a catalogue's assets become bands: shared by local catalogues and STAC APIs."""

    bands: dict[str, str] | None = Field(None, description="common band name -> asset key")
    mask: str | None = Field(None, description="asset key of the cloud mask, with bands")
    mask_kind: Literal["fmask", "cfmask", "scl", "qa_pixel"] = Field(
        "fmask", description="fmask: HLS bits; cfmask: classic Fmask values; scl: Sentinel-2 SCL; "
        "qa_pixel: Landsat Collection 2 QA_PIXEL bits"
    )
    scale: PerBand = Field(
        None, description="multiply raw values by this to get reflectance (or the band's unit): one value, or "
        "{band: value}; wins over the catalogue's raster:bands and the preset"
    )
    offset: PerBand = Field(None, description="add this after scaling: one value, or {band: value}")
    nodata: PerBand = Field(None, description="raw value meaning no data: one value, or {band: value}")
    max_cloud_cover: float = Field(100.0, ge=0.0, le=100.0, description="largest eo:cloud_cover (%) of an item kept")


class CatalogSource(AssetsSpec):
    """A local static STAC catalogue (for example made by `instarun catalog build`)."""

    kind: Literal["catalog"]
    path: InputCatalogue = Field(description="catalog.json of the static catalogue")
    collections: list[str] | None = Field(None, description="collections to use (default: all)")
    preset: PresetName | None = Field(
        None, description="sensor preset (asset keys, scaling, mask); default: the one `instarun catalog build` "
        "wrote into the catalogue, unless bands are given"
    )


class StacSource(AssetsSpec):
    """A STAC API searched with pystac-client."""

    kind: Literal["stac"]
    url: str = Field(pattern=r"^https?://", description="root of the STAC API")
    collections: list[str] = Field(min_length=1, description="collection ids to search")
    preset: PresetName | None = Field(
        None, description="catalogue preset (asset keys, scales, masks); guessed for known URLs"
    )
    timeout: float = Field(30.0, gt=0, le=600, description="seconds to wait for one answer")
    retries: int = Field(4, ge=0, le=20, description="retries on 429/5xx, timeouts, drops")


Source = Annotated[Union[DemoSource, CatalogSource, StacSource], Field(discriminator="kind")]
