"""The recipe: one typed model for a whole experiment, built from its sections (one module
each, in docs/recipes.md's order). Every section's names are importable from here too."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from instageo.recipe.chips import ChipSpec, HeldOut, LabelSpec, MaskClass, MaskSpec, SplitSpec, TimeSpec
from instageo.recipe.data import Data
from instageo.recipe.executors import DaskExecutor, Executor, LocalExecutor
from instageo.recipe.export import EmbeddingsSpec, Export, OnnxSpec, PredictSpec, ViewerSpec
from instageo.recipe.fields import (
    NOT_IN_KEY, SWEEP, CatalogueFile, Date, Fraction, InputCatalogue, InputFile, InputPath, LonLatBox, Model,
    PositiveInt, Seed, Sweep, SweepMarker,
)
from instageo.recipe.observations import (
    DateRange, Observations, PointObservations, PolygonObservations, RasterObservations,
)
from instageo.recipe.sources import AssetsSpec, CatalogSource, DemoSource, Source, StacSource
from instageo.recipe.training import Distill, Student, Task, Teacher, TrainSpec

__all__ = [
    "NOT_IN_KEY", "SWEEP", "AssetsSpec", "CatalogSource", "CatalogueFile", "ChipSpec", "DaskExecutor", "Data",
    "Date", "DateRange", "DemoSource", "Distill", "EmbeddingsSpec", "Executor", "Export", "Fraction", "HeldOut",
    "InputCatalogue", "InputFile", "InputPath", "LabelSpec", "LocalExecutor", "LonLatBox", "MaskClass", "MaskSpec",
    "Model", "Observations", "OnnxSpec", "PointObservations", "PolygonObservations", "PositiveInt", "PredictSpec",
    "RasterObservations", "Recipe", "Seed", "Source", "SplitSpec", "StacSource", "Student", "Sweep", "SweepMarker",
    "Task", "Teacher", "TimeSpec", "TrainSpec", "ViewerSpec",
]


class Recipe(Model):
    """A whole experiment: data, task, teacher, student(s) and what to export."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64, description="names the run folder runs/<name>/"
    )
    seed: Sweep[Seed] = Field(
        0, description="seed of training (initialisation, batch order, augmentation); a list: one teacher and "
        "its students per seed, and the report gives mean and spread (the split has its own data.split.seed)"
    )
    data: Data
    task: Task = Task()
    teacher: Teacher = Teacher()
    student: Student = Student()
    export: Export = Export()

    _path: Path | None = PrivateAttr(None)  # the recipe file, set by the loader
    _overrides: tuple[str, ...] = PrivateAttr(())  # fields given with --set, set by the loader

    @model_validator(mode="after")
    def _student_fits_teacher(self) -> Recipe:
        from instageo.recipe.backbones import BACKBONES

        spec = BACKBONES.get(self.teacher.backbone)
        depths = self.student.depth if isinstance(self.student.depth, list) else [self.student.depth]
        too_deep = [d for d in depths if spec is not None and d > spec.depth]
        if too_deep:
            raise PydanticCustomError(
                "depth", "{depths} deeper than the teacher's {teacher} blocks ({backbone})",
                {"depths": too_deep, "teacher": spec.depth, "backbone": self.teacher.backbone,
                 "field": "student.depth"},
            )
        return self

    @property
    def path(self) -> Path | None:
        return self._path
