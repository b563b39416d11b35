"""Sweeps: a list at a ``Sweep[...]`` field turns one recipe into several variants.

``student.depth: [2, 4, 6]`` gives three variants, each a plain ``Recipe`` whose depth is a
single value. Several swept fields give their cartesian product.
"""

from __future__ import annotations

import itertools
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from instageo.recipe.models import SWEEP, Recipe


@dataclass(frozen=True)
class Variant:
    """One concrete recipe of a sweep. ``params`` holds the swept values (empty if no sweep)."""

    recipe: Recipe
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ",".join(f"{path}={value}" for path, value in self.params.items()) or "default"


def sweepable_paths(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Dotted paths of every field declared ``Sweep[...]`` in the recipe model."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if SWEEP in info.metadata:
            paths.append(path)
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            paths.extend(sweepable_paths(nested, f"{path}."))
    return paths


def get_path(model: BaseModel, path: str) -> Any:
    value: Any = model
    for part in path.split("."):
        value = getattr(value, part)
    return value


def replace_path(model: BaseModel, path: str, value: Any) -> BaseModel:
    """A copy of ``model`` with the field at dotted ``path`` set to ``value``."""
    head, _, rest = path.partition(".")
    if rest:
        value = replace_path(getattr(model, head), rest, value)
    return model.model_copy(update={head: value})


def expand(recipe: Recipe) -> list[Variant]:
    """All variants of a recipe, in the order of the values given."""
    axes = {path: value for path in sweepable_paths() if isinstance(value := get_path(recipe, path), list)}
    if not axes:
        return [Variant(recipe)]
    variants = []
    for values in itertools.product(*axes.values()):
        concrete = recipe
        for path, value in zip(axes, values):
            concrete = typing.cast(Recipe, replace_path(concrete, path, value))
        variants.append(Variant(concrete, dict(zip(axes, values))))
    return variants
