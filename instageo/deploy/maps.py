"""A bundle's class map over a tiling, whoever asks (the predict stage from a recipe,
`instarun predict` and the app's jobs from a bundle): the engine with the class head and the
class COGs, a STAC item beside them and the summary report.json and prediction.json keep.
"""

from __future__ import annotations

from pathlib import Path

from instageo import engine
from instageo.deploy.stac_meta import write_prediction_item
from instageo.engine.heads import ClassHead, InputColour
from instageo.engine.sinks import ClassCogs
from instageo.engine.tiling import TileSpec, Tiling


def executor_of(predict_spec):
    """The engine's executor for a recipe's export.predict: None (this process) or dask blocks."""
    chosen = predict_spec.executor
    if chosen.kind != "dask":
        return None
    from instageo.engine.blocks import DaskBlocks

    return DaskBlocks(chosen.address, chosen.workers, predict_spec.block_tiles)


def predict_map(spec: TileSpec, tiling: Tiling, model_path: Path, bundle: dict, folder: Path, track, log,
                executor=None, cancel=None) -> tuple[dict[str, str], dict]:
    """prediction.tif, confidence.tif, rgb.tif (when the bands make a colour) and the STAC
    item in ``folder``: (files, summary)."""
    colour = InputColour.of(list(spec.chips.bands), bundle)
    head = ClassHead(model_path, bundle, spec.chips.size, tiling.overlap, colour)
    done = engine.predict(spec, tiling, head, ClassCogs(folder, bundle, colour), executor, track, cancel, log)
    layout = tiling.layout
    summary = {"bbox": list(tiling.area), "date": tiling.date.isoformat(), "tiles": len(tiling.jobs),
               "items_from": tiling.items_from, "items": len(tiling.items), "width": layout.width,
               "height": layout.height, "batch_size": done.batch_size,
               "class_pixels": dict(zip(bundle["classes"], done.counts.tolist())),
               **({"blocks": done.blocks} if done.blocks else {})}
    files = dict(done.files)
    files["item"] = write_prediction_item(folder, files, tiling.date.isoformat(),
                                          f"{bundle['backbone']} depth {bundle['depth']}")
    return files, summary
