"""What the engine asks of a head (what runs on the tiles) and of a sink (where the blended
rows go). engine/classes.py has the class head and its COGs, engine/features.py the encoder
head and its feature COG; a new output of prediction is a new pair here, and the loop, the
tiling and the dask blocks serve it unchanged.

Both must pickle: on dask each block's worker gets the head and the sink and opens its own
ONNX session and files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from instageo.data.chip_build import ChipJob, Stack


class Head(Protocol):
    """A model over tiles. ``prepare`` runs on the reading threads, ``predict`` on the loop's."""

    channels: int  # values per pixel that the strip blends
    weight: np.ndarray  # (size, size) blending window of a tile
    colour: object  # an InputColour for rgb.tif, or None
    session: object  # the ONNX Runtime session (opened on first use)

    def prepare(self, job: ChipJob, stack: Stack | str) -> tuple | None:
        """A read tile's stack and model inputs, or None for a tile read_stack skipped (a str)."""

    def predict(self, batch: list) -> list[tuple]:
        """(grid, values (channels, size, size), weight (size, size), rgb or None) per
        (grid, stack, model inputs...) of a batch (never empty)."""


class Writer(Protocol):
    """A sink's open files for rows [rows[0], rows[1]) of ``layout`` (a context manager)."""

    layout: object
    rows: tuple[int, int]
    names: list[str]  # its files, by the names the blocks' mosaic reads them back
    counts: np.ndarray  # int64 tallies written so far (e.g. pixels per class); all 0: nothing seen

    def __enter__(self) -> Writer: ...

    def __exit__(self, *exc) -> None: ...

    def write_blend(self, row: int, mean: np.ndarray, covered: np.ndarray, rgb: np.ndarray | None) -> None:
        """Rows of the strip's blend from ``row`` of the layout (rows outside ``rows`` dropped)."""

    def write_rows(self, row: int, arrays: dict[str, np.ndarray]) -> None:
        """Rows of its files as a block wrote them (the dask mosaic copies blocks in)."""

    def finish_block(self) -> dict[str, str]:
        """A block's files as the mosaic reads them (no overviews): {name: file name}."""

    def finish(self) -> dict[str, str]:
        """The final files (COGs): {name: file name}."""

    def discard(self) -> None:
        """Remove what it wrote (nothing to show)."""


class Sink(Protocol):
    """Where predictions go: ``folder`` and how to open a writer there (or in a block's folder)."""

    folder: Path

    def writer(self, layout, rows: tuple[int, int] | None = None, outline=None,
               folder: Path | None = None) -> Writer: ...
