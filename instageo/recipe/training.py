"""task, teacher and student: what the models predict and how they are trained."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from instageo.recipe.fields import Fraction, InputPath, Model, PositiveInt, Sweep, once_each


class Task(Model):
    """What the model predicts."""

    kind: Literal["segmentation", "regression"] = Field(
        "segmentation", description="segmentation: a class per pixel; regression: a value per pixel"
    )
    classes: list[str] = Field(
        ["absent", "present"], min_length=2, description="class names, each once; a label is an index into this list"
    )
    colors: list[str] | None = Field(None, description="'#rrggbb' per class")

    @field_validator("colors")
    @classmethod
    def _hex(cls, colors: list[str] | None) -> list[str] | None:
        import re

        for color in colors or []:
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
                raise PydanticCustomError("color", "'{c}' is not a '#rrggbb' colour", {"c": color})
        return colors

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[str]) -> list[str]:
        return once_each(classes, "classes", "class names repeated: {d}")

    @model_validator(mode="after")
    def _a_colour_per_class(self) -> Task:
        if self.colors is not None and len(self.colors) != len(self.classes):
            raise PydanticCustomError(
                "colors", "{n} colour(s) for {m} classes: give one per class, or none",
                {"n": len(self.colors), "m": len(self.classes), "field": "colors"},
            )
        return self


class TrainSpec(Model):
    """Training settings (AdamW; early stopping on the val split)."""

    epochs: Sweep[PositiveInt] = Field(10, description="most passes over the training chips")
    batch_size: Sweep[PositiveInt] = Field(8, description="chips per training step")
    lr: Sweep[Annotated[float, Field(gt=0, lt=1)]] = Field(
        1.0e-4, description="peak learning rate (AdamW, linear warm-up then cosine decay)"
    )
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    warmup_epochs: int = Field(1, ge=0, le=100_000, description="epochs of linear learning-rate warm-up")
    patience: int = Field(5, ge=1, le=100_000, description="epochs without val mIoU gain before stopping")
    smooth: int = Field(
        3, ge=1, le=100, description="epochs the val score is averaged over for early stopping and the best "
        "epoch (no epoch is chosen before this many have run), so one noisy epoch does not decide"
    )
    ema: float = Field(0.0, ge=0, lt=1, description="decay per step of an exponential moving average of the "
                       "weights (e.g. 0.9); the average is what val scores and what is kept; 0: off")
    augment: bool = Field(True, description="each training batch seen in a random one of the square's 8 "
                          "symmetries (flips and 90-degree rotations), its labels alike")
    mosaic: int = Field(
        4, ge=1, le=16, description="with augment: every training chip cut into mosaic x mosaic squares, each "
        "taken from a random chip of the batch (labels alike), so a chip's overall look cannot decide its pixels; "
        "1: off. On Sen1Floods11's held-out countries 4 took the teacher from 0.63 to 0.79 test mIoU (bench/RESULTS.md)"
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="bf16: mixed precision (bf16 autocast, fp32 weights); auto: bf16 where it pays (a GPU "
        "that supports bf16, or a CPU with AVX512-BF16 or AMX and an encoder at least 256 wide), else fp32"
    )


def _known_backbone(name: str) -> str:
    from instageo.recipe.backbones import BACKBONES

    if name not in BACKBONES:
        raise PydanticCustomError(
            "backbone", "backbone '{name}' is not valid, should be one of {valid}",
            {"name": name, "valid": sorted(BACKBONES)},
        )
    return name


class Teacher(Model):
    """The foundation model fine-tuned on the chips."""

    backbone: Annotated[str, AfterValidator(_known_backbone)] = Field(
        "prithvi_eo_v1_100", description="architecture, a name from the backbones table at the end of "
        "this page (each with the published Prithvi-EO checkpoint it loads)"
    )
    weights: InputPath | None = Field(
        None, description="local pretrained checkpoint (e.g. Prithvi_EO_V1_100M.pt); none: random init"
    )
    normalize: Literal["pretrained", "chips"] = Field(
        "pretrained", description="band statistics the models see: pretrained (with weights, the "
        "backbone's pretraining mean/std for the bands it was pretrained on, the chips' for any other) "
        "or chips (the train split's own)"
    )
    head: Literal["upsample", "light"] = Field(
        "upsample", description="segmentation head: upsample (learned upsampling) or light (1x1 convolution, bilinear)"
    )
    train: TrainSpec = TrainSpec()


class Distill(Model):
    """How the students learn from the teacher."""

    temperature: Sweep[Annotated[float, Field(gt=0, le=100)]] = Field(2.0, description="softmax temperature of the KL term")
    alpha: Sweep[Fraction] = Field(0.5, description="weight of the labels' cross-entropy; 1 - alpha: of the KL to the teacher")
    feature_weight: float = Field(
        0.0, ge=0, description="weight of an MSE between the student's tokens and the teacher's "
        "after the same number of blocks (0: off)"
    )


class Student(Model):
    """The small models distilled from the teacher."""

    depth: Sweep[Annotated[int, Field(ge=1, le=64)]] = Field(
        4, description="encoder blocks the student keeps (the teacher's first N); a list: one student each"
    )
    head: Literal["copy", "reinit"] = Field(
        "copy", description="copy: start from the teacher's head; reinit: a fresh head"
    )
    distill: Distill = Distill()
    train: TrainSpec = TrainSpec()
