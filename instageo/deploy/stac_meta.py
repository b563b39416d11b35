"""STAC metadata beside the outputs, so catalogues and STAC tools can index them:

- bundle/item.json: the model as a STAC Item with the Machine Learning Model extension (MLM,
  https://github.com/stac-extensions/mlm), written with pystac's MLM extension: inputs (bands,
  shape, dimension order, z-score scaling), outputs (classes), framework, parameters;
- item.json beside prediction.tif: the prediction's COGs as one STAC Item (projection and
  raster extensions, from the files themselves by rio-stac).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pystac

from instageo.files import write_json_atomic

MLM_TASKS = {"segmentation": ["semantic-segmentation"], "regression": ["regression"]}
ASSET_TITLES = {"prediction": "class per pixel", "confidence": "probability of the predicted class",
                "rgb": "true colour of the last step"}


def training_extent(index_csv: Path) -> tuple[list[float], tuple[str, str]]:
    """The lon/lat box of the train chips' centres and their first and last acquisition dates."""
    import csv

    rows = [r for r in csv.DictReader(open(index_csv, newline="")) if r["split"] == "train"]
    lons, lats = [float(r["lon"]) for r in rows], [float(r["lat"]) for r in rows]
    dates = sorted(d for r in rows for d in r["dates"].split(";") if d)
    return [min(lons), min(lats), max(lons), max(lats)], (dates[0], dates[-1])


def write_model_item(folder: Path, bundle: dict, params: int, bbox: list[float], dates: tuple[str, str],
                     pretrained: str | None) -> None:
    """bundle/item.json: the bundle's model.onnx described by the MLM extension. ``bbox`` and
    ``dates`` are the training chips' extent and time span."""
    from pystac.extensions.mlm import (
        Classification, InputStructure, MLMExtension, ModelInput, ModelOutput, ResultStructure, ValueScaling,
    )
    from shapely.geometry import box, mapping

    chip = bundle["chip"]
    tasks = MLM_TASKS[bundle["task"]]
    start, end = (dt.datetime.combine(dt.date.fromisoformat(d), dt.time(), dt.timezone.utc) for d in dates)
    item = pystac.Item(f"{bundle['backbone']}-depth{bundle['depth']}", mapping(box(*bbox)), list(bbox), None,
                       {"description": f"{bundle['backbone']} encoder, {bundle['depth']} blocks, with a "
                                       f"{bundle['task']} head; instageo bundle (bundle.json says how to run it)"},
                       start_datetime=start, end_datetime=end)
    norm = bundle["normalization"]
    chips = ModelInput.create(
        name="chips", bands=bundle["bands"],
        input=InputStructure.create(shape=[-1, len(bundle["bands"]), chip["steps"], chip["size"], chip["size"]],
                                    dim_order=["batch", "bands", "time", "height", "width"], data_type="float32"),
        description=bundle["inputs"][0]["description"] + "; " + bundle["normalization"]["nodata"])
    # MLM 1.4 wants one scaling per band (a list); pystac 1.15's setter takes a single one
    chips.properties["value_scaling"] = [ValueScaling.create(type="z-score", mean=m, stddev=s).to_dict()
                                         for m, s in zip(norm["mean"], norm["std"])]
    inputs = [chips]
    classes = [Classification.create(value=i, name=name, color_hint=colour.lstrip("#").upper())
               for i, (name, colour) in enumerate(zip(bundle["classes"], bundle["colours"]))]
    output = bundle["output"]
    outputs = [ModelOutput.create(
        name=output["name"], tasks=tasks, description=output["description"],
        result=ResultStructure.create(shape=[-1, output["shape"][1], chip["size"], chip["size"]],
                                      dim_order=["batch", "channel", "height", "width"], data_type="float32"),
        classes=classes if bundle["task"] == "segmentation" else None,
    )]
    MLMExtension.ext(item, add_if_missing=True).apply(
        name=f"{bundle['backbone']} depth {bundle['depth']}", architecture="ViT (Prithvi-EO style encoder)",
        tasks=tasks, input=inputs, output=outputs, framework="ONNX", total_parameters=params,
        pretrained=pretrained is not None, pretrained_source=pretrained, batch_size_suggestion=8)
    if classes and bundle["task"] == "segmentation":  # the outputs' classification:classes
        from pystac.extensions.classification import ClassificationExtension

        item.stac_extensions.append(ClassificationExtension.get_schema_uri())
    model = pystac.Asset(bundle["model"], media_type="application/octet-stream; application=onnx",
                         roles=["mlm:model"], title="float32 ONNX model")
    item.add_asset("model", model)
    if bundle.get("model_int8"):
        item.add_asset("model_int8", pystac.Asset(bundle["model_int8"], roles=["mlm:model"],
                                                  media_type="application/octet-stream; application=onnx",
                                                  title="int8 (dynamically quantised) ONNX model"))
    item.add_asset("bundle", pystac.Asset("bundle.json", media_type="application/json", roles=["metadata"],
                                          title="how to run the model (schemas/bundle.schema.json)"))
    write_json_atomic(folder / "item.json", item.to_dict(include_self_link=False))


def write_prediction_item(folder: Path, files: dict[str, str], date: str, model: str) -> str:
    """item.json beside a prediction's COGs: one STAC Item, their assets, from the files."""
    import rio_stac

    when = dt.datetime.combine(dt.date.fromisoformat(date), dt.time(), dt.timezone.utc)
    assets = {name: pystac.Asset(path, title=ASSET_TITLES.get(name), media_type=pystac.MediaType.COG,
                                 roles=["data"]) for name, path in files.items()}
    item = rio_stac.create_stac_item(str(folder / files["prediction"]), input_datetime=when, id="prediction",
                                     with_proj=True, properties={"instageo:model": model},
                                     assets=assets)
    write_json_atomic(folder / "item.json", item.to_dict(include_self_link=False))
    return "item.json"
