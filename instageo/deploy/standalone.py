"""`instarun predict BUNDLE`: an exported bundle over a new area and date, without its recipe.

bundle.json holds what the predict stage takes from the recipe (bands, chip spec, cloud mask,
classes, colours, the data source); an ``engine.tiling.TileSpec`` is made from it and run by the code
the predict stage runs (``tile_area`` and ``maps.predict_map``): the same acquisition
choice, reading, blending and COGs, with no recipe. The catalogue searched is the
bundle's own unless ``--catalog`` or ``--stac`` names another (one serving the same bands).
Outputs are written into a temporary folder inside OUT and moved into place when complete.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from pathlib import Path

from instageo.deploy.maps import predict_map
from instageo.engine import runtime
from instageo.engine.bundle import read_bundle
from instageo.engine.tiling import Area, TileSpec, check_area_size, tile_area
from instageo.errors import InputError
from instageo.files import write_json_atomic
from instageo.recipe.defaults import INT8_TOLERANCE_PP, PREDICT_BATCH_SIZE, PREDICT_OVERLAP
from instageo.recipe.models import AssetsSpec

log = logging.getLogger("instageo.predict")


def bundle_folder(given: Path) -> Path:
    """The bundle folder the user means: ``given`` itself, or the folder of a bundle.json
    given as a file; named as given when it is not one (a mistyped sub-folder of a bundle
    is an error, never its parent's bundle)."""
    if given.is_file() and given.name == "bundle.json":
        return given.parent
    if not given.is_dir():
        raise InputError(f"{given}: no such folder; give an export stage's bundle/ folder")
    if not (given / "bundle.json").is_file():
        raise InputError(f"{given}: no bundle.json in this folder; give an export stage's bundle/ folder")
    return given


def check_bundle(folder: Path, bundle: dict) -> None:
    """Refuse, before any work, a bundle whose parts disagree: bands, normalisation, chip
    spec, classes and every ONNX model file's inputs and outputs must describe one model
    (a bundle edited to one band ran and wrote a wrong map)."""
    bands, chip, classes = bundle["bands"], bundle["chip"], bundle["classes"]
    problems = [f"normalization.{key} has {len(bundle['normalization'][key])} value(s) for {len(bands)} band(s)"
                for key in ("mean", "std") if len(bundle["normalization"][key]) != len(bands)]
    if len(bundle["colours"]) != len(classes):
        problems.append(f"colours has {len(bundle['colours'])} colour(s) for {len(classes)} class(es)")
    chips = ["batch", len(bands), chip["steps"], chip["size"], chip["size"]]
    declared = {t["name"]: t["shape"] for t in bundle["inputs"]}
    first = bundle["inputs"][0]
    if not _agree(first["shape"], chips):
        problems.append(f"inputs.{first['name']} is {first['shape']}, but bands, chip.steps and chip.size make "
                        f"{chips}")
    if bundle["task"] == "segmentation" and bundle["output"]["shape"][1:2] != [len(classes)]:
        problems.append(f"output is {bundle['output']['shape']} for {len(classes)} class(es)")
    if problems:
        raise InputError(f"{folder / 'bundle.json'}: {problems[0]}; re-export the bundle rather than edit it")
    for key in ("model", "model_int8", "model_fp16"):
        if bundle.get(key):
            _check_model_file(folder / bundle[key], declared, bundle["output"])


def _agree(shape: list, other: list) -> bool:
    """Same rank, and the same size wherever both fix one (named dimensions such as 'batch'
    are free; ONNX names the ones the exporter left dynamic)."""
    return len(shape) == len(other) and all(
        a == b or not isinstance(a, int) or not isinstance(b, int) for a, b in zip(shape, other))


def _check_model_file(path: Path, inputs: dict[str, list], output: dict) -> None:
    """The ONNX file loads, is a valid graph, and takes and gives what bundle.json says."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises protobuf, checker and OS errors alike for a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a loadable ONNX model ({reason[:200]}); re-export the bundle") from None

    def shapes(values) -> dict[str, list]:
        return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                         for d in v.type.tensor_type.shape.dim] for v in values}

    have = {name: shape for name, shape in shapes(model.graph.input).items()
            if name not in {i.name for i in model.graph.initializer}}
    gives = shapes(model.graph.output)
    if set(have) != set(inputs):
        raise InputError(f"{path}: takes inputs {sorted(have)}, but bundle.json declares {sorted(inputs)}")
    for name, shape in inputs.items():
        if not _agree(have[name], shape):
            raise InputError(f"{path}: input {name} is {have[name]}, but bundle.json declares {shape}")
    if output["name"] not in gives or not _agree(gives[output["name"]], output["shape"]):
        raise InputError(f"{path}: output {output['name']} is {gives.get(output['name'])}, but bundle.json "
                         f"declares {output['shape']}")


def check_out_folder(out: Path) -> None:
    """``--out`` can become a folder we write into: checked before any work by making (and
    removing) a folder where it would go, so a file in the way, /proc or a read-only place
    is one line naming --out, not a traceback after the prediction."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file is there; give a folder")
    ancestor = next(p for p in (out, *out.parents) if p.exists())
    if not ancestor.is_dir():
        raise InputError(f"--out {out}: {ancestor} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".instageo-probe-", dir=ancestor))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write in {ancestor} ({exc.strerror or exc})") from None


def source_for(bundle: dict, catalog: Path | None, stac: str | None, collections: list[str] | None) -> dict:
    """The data source to read: the bundle's, or the same bands from another catalogue."""
    own = bundle["source"]
    assets = {k: own[k] for k in AssetsSpec.model_fields if k in own}
    if catalog is not None:
        return {"kind": "catalog", "path": str(catalog), **assets, "preset": own.get("preset"),
                "collections": collections or (own.get("collections") if own["kind"] == "catalog" else None)}
    if stac is not None:
        chosen = collections or (own.get("collections") if own["kind"] == "stac" else None)
        if not chosen:
            raise InputError("--stac: give --collection (the bundle was not trained on a STAC API)")
        return {"kind": "stac", "url": stac, "collections": chosen, **assets, "preset": own.get("preset")}
    if own["kind"] == "catalog":
        raise InputError("the bundle was trained on a local catalogue (its path is not kept in the bundle): "
                         "give --catalog PATH/catalog.json, or --stac URL")
    return dict(own, collections=collections or own.get("collections")) if own["kind"] == "stac" else dict(own)


def predict_bundle(bundle_dir: Path, bbox, date: dt.date, out: Path, track, catalog: Path | None = None,
                   stac: str | None = None, collections: list[str] | None = None,
                   overlap: float = PREDICT_OVERLAP, batch_size: int = PREDICT_BATCH_SIZE,
                   int8_tolerance_pp: float | None = INT8_TOLERANCE_PP, source_dir: Path | None = None,
                   cancel=None) -> dict:
    """prediction.tif, confidence.tif (and rgb.tif), items.json and prediction.json in ``out``.
    ``source_dir``: where a demo bundle's scene is kept (made once), so that its items.json
    can be read again later; by default it is made in a temporary folder and removed.
    ``track(iterable, total, description)`` reports progress (a Progress's track).
    ``cancel``: a threading.Event that stops the prediction between tiles (engine.Cancelled)."""
    bundle_dir = bundle_folder(bundle_dir)
    bundle = read_bundle(bundle_dir)
    spec = TileSpec.of_bundle(bundle, source_for(bundle, catalog, stac, collections), overlap, batch_size)
    area = Area("area", tuple(bbox), None, "--bbox")
    check_area_size(spec, area, len(bundle["classes"]), fix="give a smaller --bbox")
    out.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-predict-", dir=out))
    try:
        from instageo.data.search import demo_scene, open_catalogue, search_area

        base = source_dir or partial / "source"  # the demo scene, when the bundle's source is the demo
        if spec.source.kind == "demo" and not (base / "scene" / "catalog.json").is_file():
            demo_scene(spec.source, base)

        catalogue = open_catalogue(spec.source, base)
        log.info("searching %s for %s around %s", catalogue.name, tuple(bbox), date)
        items = search_area(catalogue, tuple(bbox), date, spec.source, spec.chips)
        if not items:
            raise InputError(f"{catalogue.name} has no items for the area {tuple(bbox)} around {date}")
        tiling = tile_area(spec, area, date, items, catalogue.name, base, log)
        model, why = runtime.choose_model(bundle, int8_tolerance_pp)
        log.info("predicting with %s (%s)", model, why)
        files, summary = predict_map(spec, tiling, bundle_dir / model, bundle, partial, track, log, cancel=cancel)
        summary = {"bundle": str(bundle_dir), "model": model, "model_why": why, **summary,
                   "catalogue": catalogue.name, "files": files}
        write_json_atomic(partial / "items.json", items)
        write_json_atomic(partial / "prediction.json", summary)
        for name in [*files.values(), "items.json", "prediction.json"]:
            os.replace(partial / name, out / name)
        return summary
    finally:
        shutil.rmtree(partial, ignore_errors=True)
