"""Load a recipe YAML into a validated ``Recipe``, reporting every problem with its line.

PyYAML's node tree keeps the position of every key, so each pydantic error location
(``data.chips.time.steps``) maps back to ``recipe.yaml:LINE``. All problems are collected
and raised together in one ``RecipeError``.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from instageo.errors import RecipeError
from instageo.recipe.models import Recipe

PathKey = tuple[typing.Union[str, int], ...]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, apply ``--set`` overrides to, and validate the recipe at ``path``."""
    path = Path(path)
    data, lines = read_yaml(path)
    origins = {key: f"{path}:{line}" for key, line in lines.items()}
    for override in overrides or []:
        key = apply_override(data, override)
        origins[key] = f"--set {override.split('=', 1)[0]}"
    recipe = validate_recipe(data, path, origins)
    recipe._overrides = tuple(o.split("=", 1)[0].strip() for o in overrides or [])
    return recipe


def read_yaml(path: Path) -> tuple[dict, dict[PathKey, int]]:
    """Parse YAML, returning the data and a map from key path to 1-based line number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError([f"{path}: cannot read recipe: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError([f"{path}:{line}: not valid UTF-8 (byte {exc.start})"]) from None
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError([f"{path}:{line}: invalid YAML: {problem}"]) from None
    except RecursionError:
        raise RecipeError([f"{path}:1: invalid YAML: nested too deeply"]) from None
    if not isinstance(data, dict):
        raise RecipeError([f"{path}:1: a recipe must be a mapping of sections (name, data, ...)"])
    lines: dict[PathKey, int] = {(): 1}
    problems: list[str] = []
    _collect_lines(node, (), lines, problems, path)
    if problems:
        raise RecipeError(problems)
    return data, lines


class _Loader(yaml.SafeLoader):
    """SafeLoader whose impossible dates (2023-02-30) are YAML errors with a line, not ValueErrors."""

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"'{node.value}' is not a valid date ({exc})", node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _collect_lines(node, key: PathKey, lines, problems, path) -> None:
    """Record the line of every key; report duplicate keys and keys that are not text."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            name = key_node.value
            line = key_node.start_mark.line + 1
            numbered = key and key[-1] == "remap" and key_node.tag == "tag:yaml.org,2002:int"  # source class ids
            if not isinstance(key_node, yaml.ScalarNode) or (key_node.tag != "tag:yaml.org,2002:str" and not numbered):
                problems.append(f"{path}:{line}: {_dotted(key + (str(name),))}: key is not text; quote it")
                continue
            if name in seen:
                problems.append(f"{path}:{line}: {_dotted(key + (name,))}: duplicate key")
            seen.add(name)
            lines[key + (name,)] = key_node.start_mark.line + 1
            _collect_lines(value_node, key + (name,), lines, problems, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[key + (index,)] = item.start_mark.line + 1
            _collect_lines(item, key + (index,), lines, problems, path)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=v`` -> (["a", "b"], value typed as YAML would); ``a=1,2,3`` -> a list (a sweep)."""
    if "=" not in text:
        raise RecipeError([f"--set {text}: expected KEY=VALUE, e.g. student.depth=2,4"])
    dotted, raw = text.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise RecipeError([f"--set {text}: empty key in '{dotted}'"])
    try:
        if "," in raw and not raw.lstrip().startswith(("[", "{", '"', "'")):
            value = [yaml.safe_load(part) for part in raw.split(",")]
        else:
            value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise RecipeError([f"--set {text}: cannot parse value '{raw}'"]) from None
    return keys, value


def apply_override(data: dict, text: str) -> PathKey:
    keys, value = parse_override(text)
    target = data
    for depth, key in enumerate(keys[:-1]):
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise RecipeError([f"--set {text}: '{where}' is not a section"])
        target = child
    target[keys[-1]] = value
    return tuple(keys)


def validate_recipe(data: dict, path: Path, origins: dict[PathKey, str]) -> Recipe:
    """Validate raw recipe data; on failure raise RecipeError with one located line per problem."""
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": path.parent})
        recipe._path = path.resolve()
        return recipe
    except ValidationError as exc:
        problems = format_errors(exc.errors(), data, origins)
        raise RecipeError(problems) from None


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
        line = f"{where}: {_dotted(key) or '(recipe)'}: {_message(error, key, data)}"
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


def _dotted(key: PathKey) -> str:
    return ".".join(str(part) for part in key)
