"""The stages of the product pipeline, in execution order."""

from __future__ import annotations

from pathlib import Path

from instageo.recipe.models import CatalogueFile
from instageo.runner.stage import Stage


PREDICT_SECTIONS = ("export.predict", "data.chips", "data.observations")


def _teacher_exported(recipe) -> bool:
    return recipe.export.onnx.teacher


def _embeddings_of(whose: str):
    def wanted(recipe) -> bool:
        return recipe.export.embeddings is not None and recipe.export.embeddings.model == whose

    return wanted


def _catalogue_digest(path: Path) -> str:
    from instageo.data.catalogue import LocalCatalogue

    return LocalCatalogue(path).fingerprint()


def default_pipeline() -> list[Stage]:
    """search -> chips -> teacher -> student -> export -> predict -> viewer, and speed (every
    model of the sweep timed side by side, once); with
    export.onnx.teacher, teacher -> teacher_export -> teacher_predict too (once per teacher);
    with export.embeddings, export -> embeddings (a student's encoder features over the area), or,
    with its model: teacher, teacher_export -> teacher_embeddings.
    Stage functions are imported when called: a cached rerun or a plan never loads torch."""
    search, chips = _module("instageo.data.search"), _module("instageo.data.chips")
    teacher, student = _module("instageo.model.teacher"), _module("instageo.model.student")
    export, predict, viewer, speed, embeddings = (_module(f"instageo.deploy.{name}")
                                                  for name in ("export", "predict", "viewer", "speed", "embeddings"))
    return [
        Stage("search", search.run, version="3", report_into="dataset", after=search.after,
              input_digests=((CatalogueFile, _catalogue_digest),),
              sections=("data.source", "data.observations", "data.chips.size",
                        "data.chips.resolution", "data.chips.bands", "data.chips.time")),
        Stage("chips", chips.run, version="4", needs=("search",), report_into="dataset",
              after=chips.after, sections=("data.chips", "data.split", "task")),
        Stage("teacher", teacher.run, version="5", needs=("chips",), report_into="teacher",
              sections=("teacher", "task", "seed"), ranks=True),
        Stage("student", student.run, version="6", needs=("chips", "teacher"), report_into="variant",
              sections=("student", "task", "seed"), ranks=True),
        Stage("teacher_export", export.run_teacher, version="3", needs=("chips", "teacher"),
              report_into="teacher", sections=("export.onnx", "export.embeddings"), when=_teacher_exported),
        Stage("export", export.run, version="6", needs=("chips", "teacher", "student"), report_into="variant",
              sections=("export.onnx", "export.embeddings"), report_markdown=_module("instageo.deploy.int8").int8_markdown),
        Stage("teacher_predict", predict.run_teacher, version="3", needs=("search", "teacher_export"),
              report_into="teacher", sections=PREDICT_SECTIONS),
        Stage("predict", predict.run, version="9", needs=("search", "export"), report_into="variant",
              sections=PREDICT_SECTIONS),
        Stage("embeddings", embeddings.run, version="1", needs=("search", "export"), report_into="variant",
              sections=PREDICT_SECTIONS + ("export.embeddings",), when=_embeddings_of("student"),
              report_markdown=embeddings.probe_markdown),
        Stage("teacher_embeddings", embeddings.run_teacher, version="1", needs=("search", "teacher_export"),
              report_into="teacher", sections=PREDICT_SECTIONS + ("export.embeddings",),
              when=_embeddings_of("teacher"), report_markdown=embeddings.probe_markdown),
        Stage("viewer", viewer.run, version="3", needs=("export", "predict"), optional=("embeddings",),
              report_into="variant", sections=("export.viewer",), report_files=_module("instageo.deploy.compare").compare_into_report),
        Stage("speed", speed.run, version="1", needs=("chips", "teacher", "student", "export"),
              optional=("teacher_export",), gather=True, report_into="run", sections=("export.onnx",)),
    ]


class _module:
    """Attributes of a module, as callables that import it on their first call."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, function: str):
        def call(*args, **kwargs):
            import importlib

            return getattr(importlib.import_module(self.name), function)(*args, **kwargs)

        call.__qualname__ = f"{self.name}.{function}"
        return call
