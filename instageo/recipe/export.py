"""export: what is made from each student (ONNX, prediction, viewer, embeddings)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from instageo.recipe.defaults import INT8_TOLERANCE_PP, PREDICT_BATCH_SIZE, PREDICT_OVERLAP
from instageo.recipe.executors import Executor, LocalExecutor
from instageo.recipe.fields import NOT_IN_KEY, Date, InputPath, LonLatBox, Model, PositiveInt


class OnnxSpec(Model):
    """ONNX export of each student, with a parity check against PyTorch."""

    opset: int = Field(17, ge=13, le=23, description="ONNX opset version")
    tolerance: float = Field(1.0e-3, gt=0, description="largest |logit difference| allowed")
    quantize: bool = Field(
        True, description="also write an int8 model (dynamic quantisation of MatMul/Gemm weights) and its val and "
        "test metrics beside float32's; predict uses it when it is within export.predict.int8_tolerance_pp"
    )
    float16: bool = Field(
        False, description="also write a float16 model for GPUs (float32 inputs and outputs), checked against "
        "PyTorch; predict runs it where a CUDA GPU is present (int8 is for CPUs)"
    )
    teacher: bool = Field(
        False, description="also export the teacher (once: the teacher_export stage), predict with it over the same "
        "areas (teacher_predict) and time each student's ONNX model beside it"
    )


class PredictSpec(Model):
    """Sliding-window prediction of each exported student over an area."""

    bbox: LonLatBox | None = Field(
        None, description="west, south, east, north in degrees"
    )
    geojson: InputPath | None = Field(
        None, description="GeoJSON polygon(s) to predict over, lon/lat (outside them: nodata); area when no bbox"
    )
    areas: list[LonLatBox] | InputPath | None = Field(
        None, description="several areas, each predicted into its own COGs (areas/<name>/) with an index "
        "areas.geojson: a list of [west, south, east, north] boxes (area1, area2, ...), or a GeoJSON file whose "
        "features are the areas (named by their 'name' property); instead of bbox / geojson"
    )
    date: Date | None = Field(None, description="date to predict for (default: the latest observation's)")
    overlap: float = Field(
        PREDICT_OVERLAP, ge=0.0, lt=1.0, description="fraction of a chip that neighbouring tiles share, blended (0.5: the model "
        "sees 2x more pixels for a map about 1 pp mIoU better; bench/RESULTS.md)"
    )
    batch_size: PositiveInt = Field(
        PREDICT_BATCH_SIZE, description="tiles per ONNX call (on 2 CPU cores 2, 4 and 8 ran at the same speed and 8 took 575 MiB more); "
        "unset on a GPU: the fastest batch its memory holds, doubling from 2"
    )
    int8_tolerance_pp: float | None = Field(
        INT8_TOLERANCE_PP, ge=0.0, le=100.0, description="predict with the int8 model (export.onnx.quantize) when quantisation "
        "lost at most this much val mIoU, in percentage points (regression: this % of val RMSE); null: always float32"
    )
    executor: Executor = Field(
        LocalExecutor(), description="where tiles are predicted: 'local', in this process; 'dask', in blocks of tile "
        "rows on a dask.distributed cluster, the same bytes (not part of the cache key)", json_schema_extra=NOT_IN_KEY
    )
    block_tiles: PositiveInt = Field(
        64, description="with the dask executor, about this many tiles per task, in whole tile rows (not part of "
        "the cache key)", json_schema_extra=NOT_IN_KEY
    )

    @field_validator("areas")
    @classmethod
    def _some_areas(cls, areas):
        if isinstance(areas, list) and not areas:
            raise PydanticCustomError("areas_empty", "areas: give at least one box", {})
        return areas

    @model_validator(mode="after")
    def _one_way_to_say_where(self) -> PredictSpec:
        if self.areas is not None and (self.bbox is not None or self.geojson is not None):
            raise PydanticCustomError(
                "areas_and_bbox", "give areas, or bbox / geojson, not both", {"field": "export.predict.areas"},
            )
        return self


class ViewerSpec(Model):
    """The offline map viewer of the predictions."""

    zoom: tuple[Annotated[int, Field(ge=0, le=22)], Annotated[int, Field(ge=0, le=22)]] = Field(
        (8, 13), description="min and max zoom of the tile pyramid"
    )

    @field_validator("zoom")
    @classmethod
    def _ordered(cls, zoom: tuple[int, int]) -> tuple[int, int]:
        if zoom[0] > zoom[1]:
            raise PydanticCustomError("zoom_order", "min zoom {z} above max", {"z": zoom[0]})
        return zoom


class EmbeddingsSpec(Model):
    """An encoder over the prediction area as a map of features: PCA (fitted on the train
    chips), unit length, quantised, one vector per patch or pixel, as a COG."""

    model: Literal["student", "teacher"] = Field(
        "student", description="whose encoder: each student's (the embeddings stage), or the teacher's, once "
        "(teacher_embeddings; needs export.onnx.teacher)"
    )
    dims: int = Field(64, ge=1, le=1024, description="PCA components kept (at most the encoder's features)")
    quantize: Literal["int8", "binary", "none"] = Field(
        "int8", description="int8: round(127 x value), -128 nodata (AlphaEarth's layout); binary: the sign bits, "
        "packed 8 per byte, with a mask; none: float32, NaN nodata"
    )
    level: Literal["patch", "pixel"] = Field(
        "patch", description="one vector per encoder patch (the chips' resolution x the patch size), or per pixel"
    )


class Export(Model):
    """What is made from each student: ONNX model, prediction, viewer, embeddings."""

    onnx: OnnxSpec = OnnxSpec()
    predict: PredictSpec = PredictSpec()
    viewer: ViewerSpec = ViewerSpec()
    embeddings: EmbeddingsSpec | None = Field(
        None, description="also map an encoder's features over the prediction area ({} for the defaults)"
    )

    @model_validator(mode="after")
    def _teacher_embeddings_need_its_export(self) -> Export:
        if self.embeddings is not None and self.embeddings.model == "teacher" and not self.onnx.teacher:
            raise PydanticCustomError(
                "teacher_not_exported", "export.embeddings.model 'teacher' needs export.onnx.teacher: true",
                {"field": "export.embeddings.model"},
            )
        return self
