"""The documented outputs: report.json and bundle.json as pydantic models.

Their JSON Schemas (`instarun schema report|bundle`, stored in schemas/) are generated from
these models; the export stage writes bundle.json through ``Bundle``, so a bundle that does
not match its documentation cannot be written. Sections that stages extend (metrics, the
dataset's counts) allow more keys than they list.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BUNDLE_FORMAT = "instageo-bundle/2"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bundle.json ---------------------------------------------------------------------------

class Tensor(_Closed):
    name: str = Field(description="the ONNX input or output name")
    shape: list[str | int] = Field(description="dimensions, outermost first")
    dtype: Literal["float32"] = "float32"
    description: str


class Normalization(_Closed):
    mean: list[float] = Field(description="per band, in `bands` order, in the input's units")
    std: list[float] = Field(description="per band, in `bands` order")
    source: dict[str, str] = Field(description="per band: 'pretrained' (the backbone's statistics) or "
                                   "'chips' (computed on the train chips)")
    formula: str
    nodata: str


class ChipFile(_Closed):
    """How a chip GeoTIFF of the chips stage (or `instarun predict`'s reader) lays out its bands."""

    layout: str
    band_index: str
    nodata: str


class Chip(_Closed):
    size: int = Field(description="pixels per side of a model input")
    resolution: float = Field(description="metres per pixel")
    crs: str = Field(description="'utm' (the UTM zone of the chip centre) or an EPSG code")
    steps: int = Field(description="time steps per input")
    step_days: int
    tolerance_days: int
    prefer: str
    mask: dict[str, Any] = Field(description="the cloud-mask rule the chips were built with")
    file: ChipFile


class SplitChange(_Closed):
    float32: float = Field(description="the float32 model's metric")
    int8: float = Field(description="the int8 model's")
    delta: float = Field(description="int8 minus float32 (mIoU as a fraction: -0.005 is -0.5 pp)")


class Int8Check(_Closed):
    """What quantisation cost, per split; prediction decides on val, never on test."""

    metric: Literal["miou", "rmse"]
    val: SplitChange | None = None
    test: SplitChange | None = None


class Float16Check(_Closed):
    """The float16 model against PyTorch (float32) on the parity chips."""

    max_abs_diff: float
    argmax_agreement: float = Field(description="share of pixels whose class is the same")


class Bundle(_Closed):
    """bundle.json: what a program needs to run model.onnx with onnxruntime alone."""

    format: Literal["instageo-bundle/2"] = BUNDLE_FORMAT
    model: str = Field(description="the float32 ONNX model, beside this file")
    model_int8: str | None = Field(None, description="its dynamically quantised int8 twin, when exported")
    int8: Int8Check | None = None
    model_fp16: str | None = Field(None, description="its float16 twin for GPUs (float32 inputs and outputs), "
                                   "when exported")
    float16: Float16Check | None = None
    inputs: list[Tensor]
    output: Tensor
    bands: list[str] = Field(description="the input channels, in order")
    units: str = Field(description="what an input value is, before normalisation")
    normalization: Normalization
    chip: Chip
    task: Literal["segmentation", "regression"]
    classes: list[str] = Field(description="output channel k is class k (segmentation)")
    colours: list[str] = Field(description="a hex colour per class, as the maps draw them")
    ignore_index: int = Field(description="the label value that marks an unlabelled pixel in label chips")
    coordinates: bool = Field(description="whether the model takes temporal_coords and location_coords")
    backbone: str
    depth: int = Field(description="encoder blocks")
    source: dict[str, Any] = Field(description="the recipe's data source (catalogue, preset, bands)")
    metrics: dict[str, Any] = Field(description="the model's metrics on `metrics_split` (PyTorch, float32)")
    metrics_split: str


# --- report.json ---------------------------------------------------------------------------

class Metrics(_Open):
    """Segmentation: miou, iou (per class), f1, accuracy, pixels, confusion (rows true,
    columns predicted), chips, roc_auc (two classes). Regression: rmse, mae, r2, pixels."""

    pixels: int = Field(description="labelled pixels scored")
    chips: int | None = Field(None, description="chips scored")
    miou: float | None = None
    iou: list[float] | None = None
    confusion: list[list[int]] | None = None


class StageEntry(_Closed):
    name: str
    variants: list[str] = Field(description="the recipe variants this stage's result serves")
    key: str = Field(description="the cache key: SHA-256 of the stage's config, inputs and version")
    cached: bool
    reason: str = Field(description="why it ran ('new', 'forced', 'config changed: ...') or 'up to date'")
    seconds: float
    outputs: dict[str, str] = Field(description="output name -> path relative to the run folder")


class Failure(_Closed):
    stage: str | None = Field(description="the stage the run stopped in (null: before any stage)")
    variants: list[str] | None
    error: str
    log: str = Field(description="the run's log file, relative to the run folder: it holds the traceback")


class Task(_Closed):
    kind: Literal["segmentation", "regression"]
    classes: list[str]


class Baseline(_Open):
    method: str = Field(description="what it predicts, fit on the train split only")
    metrics: Metrics | None = None
    val_metrics: Metrics | None = None


class Teacher(_Open):
    """The teacher stage's summary; with several seeds, means, their spread and `seeds`."""

    backbone: str
    depth: int
    params: int
    gflops: float = Field(description="GFLOPs per chip (forward pass)")
    metrics: Metrics | None = Field(None, description="on `metrics_split`: test when the recipe has one")
    metrics_split: str | None = None
    val_metrics: Metrics | None = Field(None, description="on val: what every choice is made on")
    baselines: dict[str, Baseline] = Field(default_factory=dict)
    throughput: dict[str, float] | None = Field(None, description="chips/s (torch_img_s, onnx_img_s): the "
                                                "medians of `speed`")


class Variant(_Open):
    """One recipe variant (a student depth, a seed, ...): its student's metrics and outputs."""

    name: str
    sweep: dict[str, Any] = Field(description="the swept fields and their values")
    student_depth: int
    seed: int
    params: int | None = None
    metrics: Metrics | None = None
    val_metrics: Metrics | None = None
    onnx: str | None = Field(None, description="path of the bundle's model.onnx")
    throughput: dict[str, float] | None = Field(None, description="chips/s (torch_img_s, onnx_img_s, "
                                                "onnx_int8_img_s): the medians of `speed`")


class Timing(_Closed):
    median: float = Field(description="chips per second, median over the rounds")
    min: float
    max: float


class SpeedEntry(_Closed):
    depth: int
    same_as_teacher: bool = Field(description="the student has the teacher's architecture")
    torch: Timing
    onnx: Timing | None = None
    int8: Timing | None = None
    teacher_torch: Timing
    teacher_onnx: Timing | None = None
    speedup_torch: float = Field(description="student chips/s over the teacher's, both PyTorch: the median over "
                                 "rounds of the ratio within each round")
    speedup_onnx: float | None = Field(None, description="the same, both ONNX Runtime float32")
    speedup_int8: float | None = Field(None, description="the int8 student against the float32 ONNX teacher")


class Speed(_Closed):
    """One side-by-side measurement of every model and runtime (the `speed` stage)."""

    batch: int
    rounds: int
    device: str
    threads: int
    variants: dict[str, SpeedEntry]


class Report(_Open):
    """report.json: written after every run, finished or not (DESIGN.md's contract)."""

    recipe: str
    status: Literal["ok", "failed", "interrupted"]
    error: str | None = None
    failure: Failure | None = None
    task: Task
    source: dict[str, Any] | None = Field(None, description="the recipe's data source: kind, and the local "
                                          "catalogue's path or the STAC API's URL and collections")
    stages: list[StageEntry] = Field(description="every stage that finished, in order (cached ones too)")
    dataset: dict[str, Any] | None = Field(None, description="search and chips counts")
    teacher: Teacher | None = None
    variants: list[Variant]
    speed: Speed | None = None
    prediction: str | None = Field(None, description="the recommended variant's prediction COG")
    confidence: str | None = None
    viewer: str | None = None
    compare: str | None = Field(None, description="compare.html: every student's map side by side with a slider "
                                "(two students or more)")
    warnings: list[str] = Field(default_factory=list, description="what a reader must know before believing the "
                                "tables, one sentence each (a baseline above the teacher, a split that excluded much "
                                "of the data); report.md shows them first")


SCHEMAS = {"report": Report, "bundle": Bundle}
