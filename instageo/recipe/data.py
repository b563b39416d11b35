"""The recipe's data section: source, observations, chips, split and executor together."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from instageo.recipe.chips import ChipSpec, SplitSpec
from instageo.recipe.executors import Executor, LocalExecutor
from instageo.recipe.fields import Model
from instageo.recipe.observations import Observations
from instageo.recipe.sources import Source


class Data(Model):
    """Where the imagery and the observations come from, and how chips are made."""

    source: Source
    observations: Observations | None = Field(
        None, description="required unless the source is 'demo', which makes its own"
    )
    chips: ChipSpec = ChipSpec()
    split: SplitSpec = SplitSpec()
    executor: Executor = LocalExecutor()

    @model_validator(mode="after")
    def _observations_given(self) -> Data:
        if self.observations is None and self.source.kind != "demo":
            raise PydanticCustomError(
                "observations_missing",
                "observations are required for a '{kind}' source",
                {"kind": self.source.kind, "field": "observations"},
            )
        return self

    @model_validator(mode="after")
    def _bands_in_preset(self) -> Data:
        from instageo.recipe.presets import preset_for

        preset = preset_for(self.source)
        if preset is None:
            return self
        known = {band for keys in [preset.bands, *preset.collection_bands.values()] for band in keys}
        unknown = [band for band in self.chips.bands if band not in known]
        if unknown:
            raise PydanticCustomError(
                "band", "{unknown} not in preset '{preset}', which has {known}",
                {"unknown": unknown, "preset": preset.name, "known": sorted(known),
                 "field": "chips.bands"},
            )
        return self
