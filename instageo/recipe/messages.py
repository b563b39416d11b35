"""Pydantic's validation errors of a recipe as the user reads them: one line per problem,
located at the recipe's own line (``recipe.yaml:LINE``) or its --set override, with the fields
allowed where a name is unknown (and the closest of them)."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel

from instageo.recipe.models import Recipe

PathKey = tuple[typing.Union[str, int], ...]


def format_errors(errors: list[dict], data: dict, origins: dict[PathKey, str],
                  sweep_branches: bool = True) -> list[str]:
    """One located line per problem. ``sweep_branches``: drop the errors of the sweep branch
    the input does not take; when that leaves nothing (a union that is not a sweep, such as
    a fraction or a section), every branch's error is kept."""
    problems: list[str] = []
    for error in errors:
        key = _data_path(error["loc"], data, error["type"], sweep_branches)
        if key is None:  # the error of the sweep branch that does not match the input's type
            continue
        if error["type"] == "union_tag_invalid":
            key += ("kind",)
        if "field" in error.get("ctx", {}):  # a model-level check that names its field
            key += tuple(error["ctx"]["field"].split("."))
        where = _origin(key, origins)
        line = f"{where}: {dotted(key) or '(recipe)'}: {_message(error, key, data)}"
        if line not in problems:
            problems.append(line)
    if not problems and errors and sweep_branches:
        return format_errors(errors, data, origins, sweep_branches=False)
    return sorted(problems, key=_line_number)


def _line_number(problem: str) -> int:
    """Sort key: the recipe line of a problem; --set problems after the file's."""
    location = problem.split(": ", 1)[0]
    number = location.rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else 1 << 30


def _data_path(loc: tuple, data: Any, kind: str, sweep_branches: bool = True) -> PathKey | None:
    """Map a pydantic error location onto keys of the data, dropping union branch labels.

    Returns None for errors raised by a sweep branch the input does not take (a scalar
    branch error for a list input, or a list branch error for a scalar input).
    """
    key: list = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict):
            if part in node:
                node = node[part]
                key.append(part)
            elif index == len(loc) - 1 and kind in ("missing", "extra_forbidden"):
                key.append(part)
            # else: a discriminated-union tag such as 'stac'
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            key.append(part)
        elif isinstance(part, str):
            # a union branch label such as 'constrained-int' or 'list[float]'
            if sweep_branches and part.startswith("list[") != isinstance(node, list):
                return None
        else:
            break
    return tuple(key)


def _origin(key: PathKey, origins: dict[PathKey, str]) -> str:
    for end in range(len(key), -1, -1):
        if key[:end] in origins:
            return origins[key[:end]]
    return origins[()]


def _message(error: dict, key: PathKey, data: dict) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        message = f"unknown field '{key[-1]}'"
        allowed = _allowed_fields(key[:-1], data)
        close = difflib.get_close_matches(str(key[-1]), allowed, n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean '{close[0]}'?"
        return f"{message}; valid fields: {', '.join(allowed)}" if allowed else message
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        ctx = error["ctx"]
        return f"kind '{ctx['tag']}' is not valid, should be one of [{ctx['expected_tags']}]"
    if kind == "union_tag_not_found":
        tags = error.get("ctx", {}).get("expected_tags")  # absent when the union has a default
        return "'kind' is missing" + (f", should be one of [{tags}]" if tags else "")
    message = error["msg"]
    if message.startswith("Input should"):
        message = message.replace("Input should", "should", 1)
    if kind.endswith(("_type", "_parsing", "_than", "_equal", "_mismatch", "literal_error")):
        message += f", got {error['input']!r}"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return message


def _allowed_fields(key: PathKey, data: dict) -> list[str]:
    """Field names of the model at ``key`` (following the data's 'kind' through unions)."""
    model: type[BaseModel] | None = Recipe
    node: Any = data
    for part in key:
        if model is None or isinstance(part, int):
            return []
        field = model.model_fields.get(part)
        node = node.get(part) if isinstance(node, dict) else None
        if field is None:
            return []
        kind = node.get("kind") if isinstance(node, dict) else None
        model = _model_in(field.annotation, kind)
    return sorted(model.model_fields) if model else []


def _model_in(annotation: Any, kind: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation (Optional, Annotated, discriminated union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [m for arg in typing.get_args(annotation) if (m := _model_in(arg, kind))]
    for model in models:
        tag = model.model_fields.get("kind")
        if tag is not None and kind in typing.get_args(tag.annotation):
            return model
    return models[0] if len(models) == 1 else None


def dotted(key: PathKey) -> str:
    return ".".join(str(part) for part in key)
