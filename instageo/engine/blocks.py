"""Prediction on a dask.distributed cluster: the area in blocks of tile rows, one task each.

A block owns a band of the output's rows and reads every tile that reaches into them (so the
tiles along a block's edge are read by both neighbours), starting on a batch boundary, with
the single process's loop (engine/loop.py): each pixel sums the same tiles in the same order
from the same batches, so the mosaic has the single process's bytes. A finished block is its
folder blocks/rows<first>-<end>/ (the sink's block files and record.json), made by renaming a
temporary one, so a rerun after a kill or a lost worker redoes only the blocks that were not
finished, and two workers on one block cannot mix their files. The mosaic: one VRT per file
over the blocks (usable as it is, e.g. in QGIS), copied a band of rows at a time into the
sink's writer for the whole area, never whole in memory; the caller finishes it.

Workers write into the sink's folder: on a real cluster it must be on storage they all see.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from instageo.data.chip_build import ChipJob
from instageo.data.dask_executor import run_on_dask
from instageo.engine.loop import predict_rows
from instageo.engine.protocols import Head, Sink, Writer
from instageo.engine.tiling import Layout
from instageo.errors import InputError
from instageo.files import write_bytes_atomic, write_json_atomic

BLOCKS = "blocks"
MOSAIC_ROWS = 1024  # rows copied from the VRTs at a time


@dataclass(frozen=True)
class DaskBlocks:
    """The executor: a dask scheduler's ``address`` (None: a local cluster of ``workers``
    processes) and about how many tiles make a block."""

    address: str | None
    workers: int
    block_tiles: int = 64


@dataclass(frozen=True)
class BlockTask:
    """What every block shares."""

    layout: Layout
    head: Head
    sink: Sink
    batch_size: int
    outline: object = None  # shapely geometry in the layout's CRS


@dataclass(frozen=True)
class Block:
    """A band of the output's rows, [first, end), and the tiles to read for it."""

    first: int
    end: int
    jobs: list[ChipJob]

    @property
    def name(self) -> str:
        return f"rows{self.first:07d}-{self.end:07d}"


def plan_blocks(jobs: list[ChipJob], layout: Layout, size: int, batch_size: int, block_tiles: int) -> list[Block]:
    """Blocks of whole tile rows of about ``block_tiles`` tiles; each block's tiles are the
    whole batches of row-major ``jobs`` holding every tile that reaches into its rows."""
    offsets = [layout.offset(job.grid)[0] for job in jobs]
    tile_rows = sorted(set(offsets))
    columns = len(jobs) // len(tile_rows)
    per_block = max(1, round(block_tiles / columns))
    starts = tile_rows[::per_block]
    blocks = []
    for first, end in zip(starts, starts[1:] + [layout.height]):
        reaching = [i for i, top in enumerate(offsets) if top < end and top + size > first]
        start = reaching[0] // batch_size * batch_size
        stop = min(-(-(reaching[-1] + 1) // batch_size) * batch_size, len(jobs))
        blocks.append(Block(first, end, jobs[start:stop]))
    return blocks


@functools.lru_cache(maxsize=2)
def _worker_head(pickled: bytes) -> Head:
    """One head (one ONNX session) per worker process for all the blocks it runs."""
    return pickle.loads(pickled)


def predict_block(block: Block, task: BlockTask) -> dict:
    """One block's files in blocks/<name>/ (or, if it was finished before, its record)."""
    done = task.sink.folder / BLOCKS / block.name
    record = _finished(done)
    if record is not None:
        return record
    shutil.rmtree(done, ignore_errors=True)  # a block an older version wrote (no "counts"): predict it again
    work = done.with_name(f".{block.name}.{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    head = _worker_head(pickle.dumps(task.head))
    writer = task.sink.writer(task.layout, rows=(block.first, block.end), outline=task.outline, folder=work)
    with writer:
        predict_rows(block.jobs, head, task.batch_size, writer, lambda items, **_: items)
    record = {"first": block.first, "end": block.end, "tiles": len(block.jobs), "files": writer.finish_block(),
              "host": os.uname().nodename, "counts": writer.counts.tolist()}
    write_json_atomic(work / "record.json", record)
    try:
        os.rename(work, done)
    except OSError:  # another worker finished it first (a task rerun after its worker was lost)
        shutil.rmtree(work, ignore_errors=True)
    return record


def predict_blocks(jobs: list[ChipJob], task: BlockTask, size: int, executor: DaskBlocks, track,
                   log) -> tuple[Writer, dict[str, str], int]:
    """Every block on the cluster, then the mosaic: the sink's writer for the whole area with
    every row copied in (not yet finished: the caller checks the area had imagery first), the
    VRTs ({"<file>_vrt": file name}) and the number of blocks."""
    folder = task.sink.folder
    blocks = plan_blocks(jobs, task.layout, size, task.batch_size, executor.block_tiles)
    finished = sum(_finished(folder / BLOCKS / b.name) is not None for b in blocks)
    log.info("predicting %d tiles in %d blocks on dask%s", len(jobs), len(blocks),
             f" ({finished} finished before)" if finished else "")
    records = run_on_dask(predict_block, blocks, {"task": task}, executor.address, executor.workers, track,
                          description="blocks (dask)", threads_per_worker=1, preload="instageo.engine.blocks")
    unseen = [b.name for b in blocks if not (folder / BLOCKS / b.name / "record.json").exists()]
    if unseen:  # the workers wrote them somewhere this machine does not see
        raise InputError(f"export.predict.executor: the workers finished {len(unseen)} block(s) this machine cannot see "
                         f"(e.g. {folder / BLOCKS / unseen[0]}): put --runs-dir on storage the workers share")
    _remove_other_blocks(folder / BLOCKS, {b.name for b in blocks})
    writer = task.sink.writer(task.layout)  # the blocks applied the outline
    vrts = {name: write_vrt(folder / f"{name}.vrt", task.layout, blocks, file)
            for name, file in records[0]["files"].items()}
    _copy_rows(vrts, writer)
    writer.counts = np.sum([r["counts"] for r in records], axis=0, dtype=np.int64)
    return writer, {f"{name}_vrt": path.name for name, path in vrts.items()}, len(blocks)


def _finished(done: Path) -> dict | None:
    """A finished block's record, or None (not run, or written by a version before "counts")."""
    try:
        record = json.loads((done / "record.json").read_text())
    except FileNotFoundError:
        return None
    return record if "counts" in record else None


def _remove_other_blocks(folder: Path, wanted: set[str]) -> None:
    """Temporaries of killed workers and the blocks of an earlier, different split."""
    for path in folder.iterdir():
        if path.name not in wanted:
            shutil.rmtree(path, ignore_errors=True)


def _copy_rows(vrts: dict[str, Path], writer: Writer) -> None:
    import contextlib

    import rasterio
    from rasterio.windows import Window

    layout = writer.layout
    with writer, contextlib.ExitStack() as stack:
        sources = {name: stack.enter_context(rasterio.open(path)) for name, path in vrts.items()}
        for row in range(0, layout.height, MOSAIC_ROWS):
            window = Window(0, row, layout.width, min(MOSAIC_ROWS, layout.height - row))
            writer.write_rows(row, {name: source.read(window=window).squeeze(0) if source.count == 1
                                    else source.read(window=window) for name, source in sources.items()})


VRT_TYPES = {"uint8": "Byte", "int8": "Int8", "float32": "Float32"}


def write_vrt(path: Path, layout: Layout, blocks: list[Block], file: str) -> Path:
    """A GDAL VRT mosaic of one of the blocks' files (paths relative to it), with their
    nodata, colour table and data type (read from the first block's)."""
    import rasterio
    from rasterio.crs import CRS

    with rasterio.open(path.parent / BLOCKS / blocks[0].name / file) as first:
        count, dtype, nodata = first.count, first.dtypes[0], first.nodata
        try:
            colours = first.colormap(1)
        except ValueError:  # no colour table
            colours = None
    transform = layout.transform
    lines = [f'<VRTDataset rasterXSize="{layout.width}" rasterYSize="{layout.height}">',
             f"  <SRS>{escape(CRS.from_user_input(layout.crs).to_wkt())}</SRS>",
             f"  <GeoTransform>{transform.c!r}, {transform.a!r}, 0.0, {transform.f!r}, 0.0, {transform.e!r}</GeoTransform>"]
    for band in range(1, count + 1):
        lines.append(f'  <VRTRasterBand dataType="{VRT_TYPES[dtype]}" band="{band}">')
        if nodata is not None:
            lines.append(f"    <NoDataValue>{'nan' if nodata != nodata else repr(nodata)}</NoDataValue>")
        if colours:
            lines.append("    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>")
            lines += [f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>' for _, (r, g, b, a) in sorted(colours.items())]
            lines.append("    </ColorTable>")
        for block in blocks:
            rows = block.end - block.first
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="1">{BLOCKS}/{block.name}/{file}</SourceFilename>',
                      f"      <SourceBand>{band}</SourceBand>",
                      f'      <SrcRect xOff="0" yOff="0" xSize="{layout.width}" ySize="{rows}"/>',
                      f'      <DstRect xOff="0" yOff="{block.first}" xSize="{layout.width}" ySize="{rows}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())
    return path
