"""Load a recipe YAML into a validated ``Recipe``, reporting every problem with its line.

PyYAML's node tree keeps the position of every key, so each pydantic error location
(``data.chips.time.steps``) maps back to ``recipe.yaml:LINE``. All problems are collected
and raised together in one ``RecipeError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from instageo.errors import RecipeError
from instageo.recipe.messages import PathKey, dotted, format_errors
from instageo.recipe.models import Recipe


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
                problems.append(f"{path}:{line}: {dotted(key + (str(name),))}: key is not text; quote it")
                continue
            if name in seen:
                problems.append(f"{path}:{line}: {dotted(key + (name,))}: duplicate key")
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
