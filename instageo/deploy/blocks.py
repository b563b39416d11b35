"""Prediction on a dask.distributed cluster: the area in blocks of tile rows, one task each.

A block owns a band of the output's rows and reads every tile that reaches into them (so
the tiles along a block's edge are read by both neighbours), starting on a batch boundary,
with the single process's read, predict and blend code (`engine.predict_rows`): each
pixel sums the same tiles in the same order from the same batches, so the mosaic has the
single process's bytes. A finished block is its folder blocks/rows<first>-<end>/ (COGs and
record.json), made by renaming a temporary one, so a rerun after a kill or a lost worker
redoes only the blocks that were not finished, and two workers on one block cannot mix
their files. The mosaic: one VRT per output over the blocks (usable as it is, e.g. in
QGIS), then the final COGs copied from them a band of rows at a time, never whole in memory.

Workers write into the stage's folder: on a real cluster it must be on storage they all see.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from instageo.data.chip_build import ChipJob
from instageo.data.dask_executor import run_on_dask
from instageo.deploy.engine import NODATA_CLASS, InputColour, Layout, Outputs, TileModel, predict_rows
from instageo.errors import InputError
from instageo.files import write_bytes_atomic, write_json_atomic

BLOCKS = "blocks"
MOSAIC_ROWS = 1024  # rows of the final COGs copied from the VRTs at a time


@dataclass(frozen=True)
class BlockSpec:
    """What every block shares: the stage folder, the area's layout and the model."""

    folder: str
    layout: Layout
    bundle: dict
    model: str
    size: int
    overlap: int
    bands: list[str]
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
def _model(path: str, bundle_json: str, size: int, overlap: int, bands: tuple[str, ...]) -> TileModel:
    """One ONNX session per worker process for all the blocks it runs."""
    bundle = json.loads(bundle_json)
    return TileModel(Path(path), bundle, size, overlap, InputColour.of(list(bands), bundle))


def predict_block(block: Block, spec: BlockSpec) -> dict:
    """One block's COGs in blocks/<name>/ (or, if it was finished before, its record)."""
    done = Path(spec.folder) / BLOCKS / block.name
    if (done / "record.json").exists():
        return json.loads((done / "record.json").read_text())
    work = done.with_name(f".{block.name}.{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    model = _model(spec.model, json.dumps(spec.bundle, sort_keys=True), spec.size, spec.overlap, tuple(spec.bands))
    outputs = Outputs(work, spec.layout, spec.bundle, model.colour, spec.outline, rows=(block.first, block.end))
    with outputs:
        predict_rows(block.jobs, model, spec.batch_size, outputs, lambda items, **_: items)
    files = outputs.finish(overviews=False)
    record = {"first": block.first, "end": block.end, "tiles": len(block.jobs), "files": files, "host": os.uname().nodename,
              "class_pixels": outputs.class_pixels.tolist()}
    write_json_atomic(work / "record.json", record)
    try:
        os.rename(work, done)
    except OSError:  # another worker finished it first (a task rerun after its worker was lost)
        shutil.rmtree(work, ignore_errors=True)
    return record


def predict_blocks(jobs: list[ChipJob], spec: BlockSpec, block_tiles: int, executor, track,
                   log) -> tuple[Outputs, dict[str, str]]:
    """Every block on the cluster, then the mosaic: its VRTs ({"<output>_vrt": file name}) and
    the final files, not yet `finish`ed to COGs (the caller checks the area had imagery first)."""
    folder = Path(spec.folder)
    blocks = plan_blocks(jobs, spec.layout, spec.size, spec.batch_size, block_tiles)
    finished = sum((folder / BLOCKS / b.name / "record.json").exists() for b in blocks)
    log.info("predicting %d tiles in %d blocks on dask%s", len(jobs), len(blocks),
                 f" ({finished} finished before)" if finished else "")
    run_on_dask(predict_block, blocks, {"spec": spec}, executor.address, executor.workers, track,
                description="blocks (dask)", threads_per_worker=1, preload="instageo.deploy.blocks")
    unseen = [b.name for b in blocks if not (folder / BLOCKS / b.name / "record.json").exists()]
    if unseen:  # the workers wrote them somewhere this machine does not see
        raise InputError(f"export.predict.executor: the workers finished {len(unseen)} block(s) this machine cannot see "
                         f"(e.g. {folder / BLOCKS / unseen[0]}): put --runs-dir on storage the workers share")
    _remove_other_blocks(folder / BLOCKS, {b.name for b in blocks})
    colour = InputColour.of(spec.bands, spec.bundle)
    outputs = Outputs(folder, spec.layout, spec.bundle, colour)  # the blocks applied the outline
    vrts = {name: write_vrt(folder / f"{name}.vrt", spec.layout, blocks, name, outputs) for name in outputs.names}
    _copy_rows(vrts, outputs)
    return outputs, {f"{name}_vrt": path.name for name, path in vrts.items()}


def _remove_other_blocks(folder: Path, wanted: set[str]) -> None:
    """Temporaries of killed workers and the blocks of an earlier, different split."""
    for path in folder.iterdir():
        if path.name not in wanted:
            shutil.rmtree(path, ignore_errors=True)


def _copy_rows(vrts: dict[str, Path], outputs: Outputs) -> None:
    import rasterio
    from rasterio.windows import Window

    layout = outputs.layout
    with outputs, rasterio.open(vrts["prediction"]) as prediction, rasterio.open(vrts["confidence"]) as confidence:
        rgb = rasterio.open(vrts["rgb"]) if "rgb" in vrts else None
        try:
            for row in range(0, layout.height, MOSAIC_ROWS):
                window = Window(0, row, layout.width, min(MOSAIC_ROWS, layout.height - row))
                outputs.write(row, prediction.read(1, window=window), confidence.read(1, window=window),
                              rgb.read(window=window) if rgb is not None else None)
        finally:
            if rgb is not None:
                rgb.close()


VRT_TYPES = {"uint8": "Byte", "float32": "Float32"}


def write_vrt(path: Path, layout: Layout, blocks: list[Block], name: str, outputs: Outputs) -> Path:
    """A GDAL VRT mosaic of one output's block COGs (paths relative to it), with the final
    COG's nodata, class names' colour table and band descriptions."""
    from rasterio.crs import CRS

    count, dtype, nodata = {"prediction": (1, "uint8", str(NODATA_CLASS)), "confidence": (1, "float32", "nan"),
                            "rgb": (3, "uint8", "0")}[name]
    transform = layout.transform
    lines = [f'<VRTDataset rasterXSize="{layout.width}" rasterYSize="{layout.height}">',
             f"  <SRS>{escape(CRS.from_user_input(layout.crs).to_wkt())}</SRS>",
             f"  <GeoTransform>{transform.c!r}, {transform.a!r}, 0.0, {transform.f!r}, 0.0, {transform.e!r}</GeoTransform>"]
    for band in range(1, count + 1):
        lines.append(f'  <VRTRasterBand dataType="{VRT_TYPES[dtype]}" band="{band}">')
        lines.append(f"    <NoDataValue>{nodata}</NoDataValue>")
        if name == "prediction":
            from instageo.data.quicklook import hex_rgb

            lines.append("    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>")
            colours = [hex_rgb(c) for c in outputs.bundle["colours"]]
            colours += [(0, 0, 0)] * (256 - len(colours))
            lines += [f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="255"/>' for r, g, b in colours]
            lines.append("    </ColorTable>")
        for block in blocks:
            rows = block.end - block.first
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="1">{BLOCKS}/{block.name}/{name}.tif</SourceFilename>',
                      f"      <SourceBand>{band}</SourceBand>",
                      f'      <SrcRect xOff="0" yOff="0" xSize="{layout.width}" ySize="{rows}"/>',
                      f'      <DstRect xOff="0" yOff="{block.first}" xSize="{layout.width}" ySize="{rows}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())
    return path
