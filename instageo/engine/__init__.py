"""The prediction engine: numpy, ONNX Runtime and rasterio; no torch, no runner, no recipe.

Every prediction goes through ``predict``: the predict stage, embeddings, `instarun predict`,
the app's jobs, the dask blocks and bench/predict.py. What to read is a ``Tiling``
(engine/tiling.py: the tiles of an area as the chips stage reads chips), what to run is a
``Head`` and where the rows go is a ``Sink`` (engine/protocols.py; engine/heads.py and
engine/sinks.py have the class map's and the embeddings'), and the executor is this
process's threads (None) or dask blocks (engine/blocks.py). engine/runtime.py holds the ONNX
sessions and the choice of batch and model file, engine/cog.py how rasters are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from instageo.errors import InputError

if TYPE_CHECKING:  # the package itself stays light: bundle.py and vectors.py need no rasterio
    import numpy as np

    from instageo.engine.protocols import Head, Sink
    from instageo.engine.tiling import TileSpec, Tiling


class Cancelled(Exception):
    """A prediction stopped by its caller's cancel event, between two tiles."""


@dataclass
class Prediction:
    """What ``predict`` wrote: the sink's files (and, on dask, the blocks' VRTs), the sink's
    counts (pixels per class, or pixels with features), the batch it ran and the blocks."""

    files: dict[str, str]
    counts: np.ndarray
    batch_size: int
    blocks: int = 0


def predict(spec: TileSpec, tiling: Tiling, head: Head, sink: Sink, executor=None, progress=None,
            cancel=None, log=None) -> Prediction:
    """Read, predict, blend and write ``tiling`` with ``head`` into ``sink``. ``executor``:
    None (this process) or engine.blocks.DaskBlocks. ``progress(iterable, total,
    description)`` reports it; ``cancel`` (a threading.Event), once set, stops it before the
    next tile with Cancelled (in this process; dask blocks run to the end). An area where no
    tile saw anything is an InputError (its files are removed)."""
    import logging

    from instageo.engine import runtime
    from instageo.engine.loop import predict_rows
    from instageo.engine.tiling import project

    progress = progress or (lambda items, **_: items)
    log = log or logging.getLogger("instageo.predict")
    batch_size = runtime.batch_size(spec, head)  # opens no session on a CPU
    outline = project(tiling.outline, tiling.layout.crs) if tiling.outline is not None else None
    vrts: dict[str, str] = {}
    blocks = 0
    if executor is not None:
        from instageo.engine.blocks import BlockTask, predict_blocks

        task = BlockTask(tiling.layout, head, sink, batch_size, outline)
        writer, vrts, blocks = predict_blocks(tiling.jobs, task, spec.chips.size, executor, progress, log)
    else:
        writer = sink.writer(tiling.layout, outline=outline)
        with writer:
            predict_rows(tiling.jobs, head, batch_size, writer, progress, cancel)
    if writer.counts.sum() == 0:
        writer.discard()
        raise InputError(f"prediction: no imagery for the area {tuple(round(v, 5) for v in tiling.area)} "
                         f"({tiling.area_name}) around {tiling.date}")
    return Prediction({**writer.finish(), **vrts}, writer.counts, batch_size, blocks)
