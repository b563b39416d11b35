"""Where work runs (this machine or a dask.distributed cluster): shared by data.executor and
export.predict.executor."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from instageo.recipe.fields import Model


class LocalExecutor(Model):
    """Work on this machine: chips read with threads; prediction in this process."""

    kind: Literal["local"] = "local"
    workers: int = Field(8, ge=1, le=256, description="chip reads in flight at once")


class DaskExecutor(Model):
    """Work on a dask.distributed cluster: a task per chip, or per block of prediction tiles."""

    kind: Literal["dask"]
    address: str | None = Field(None, description="scheduler address; none starts a LocalCluster")
    workers: int = Field(2, ge=1, le=256, description="workers of the LocalCluster")


Executor = Annotated[Union[LocalExecutor, DaskExecutor], Field(discriminator="kind")]
