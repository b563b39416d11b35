"""The plan: which stages a recipe needs, their cache keys, and why each would run.

Planning does no I/O of its own: file digests and cache lookups come in as functions, so
`instarun plan` prints exactly what `instarun` will do.

A stage's key is the SHA-256 of canonical JSON of its config sections, the keys of the
stages it reads, and its code version. Variants of a sweep that agree on everything a stage
depends on get the same key, so that stage is planned (and run) once for all of them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from instageo.files import canonical_json
from instageo.errors import InstageoError
from instageo.recipe.models import InputFile, Recipe
from instageo.recipe.sweep import Variant, get_path
from instageo.runner.stage import Stage


@dataclass
class PlannedStage:
    stage: Stage
    key: str
    config: dict[str, Any]
    inputs: dict[str, str]  # upstream stage name -> key
    recipe: Recipe  # the first variant using this stage (identical in every section it reads)
    variants: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.stage.name


@dataclass
class Plan:
    recipe_name: str
    variants: list[Variant]
    stages: list[PlannedStage]  # in execution order, one per distinct key
    keys: dict[str, dict[str, str]]  # variant name -> stage name -> key

    def stage(self, key: str) -> PlannedStage:
        return next(planned for planned in self.stages if planned.key == key)


def check_pipeline(pipeline: Sequence[Stage]) -> None:
    """Stage names unique, dependencies listed before their dependants, sections real fields."""
    seen: set[str] = set()
    gathered = {stage.name for stage in pipeline if stage.gather}
    for stage in pipeline:
        if stage.name in seen:
            raise InstageoError(f"pipeline: stage '{stage.name}' is defined twice")
        missing = [need for need in stage.needs + stage.optional if need not in seen]
        if missing:
            raise InstageoError(f"pipeline: stage '{stage.name}' needs {missing}, not defined before it")
        gathering = [need for need in stage.needs + stage.optional if need in gathered]
        if gathering:
            raise InstageoError(f"pipeline: stage '{stage.name}' needs {gathering}, which gather the sweep")
        for section in stage.sections:
            _check_section(stage.name, section)
        seen.add(stage.name)


def _check_section(stage: str, section: str) -> None:
    model: Any = Recipe
    for part in section.split("."):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            raise InstageoError(f"pipeline: stage '{stage}' reads '{section}', not a recipe field")
        model = fields[part].annotation


def stage_config(recipe: Recipe, stage: Stage, digest: Callable[[Path], str]) -> dict[str, Any]:
    """The JSON-able values of the recipe sections a stage reads; input files by content."""
    return {section: _jsonable(get_path(recipe, section), digest) for section in stage.sections}


def _jsonable(value: Any, digest: Callable[[Path], str]) -> Any:
    if isinstance(value, BaseModel):  # fields that only say where work runs (NOT_IN_KEY) are left out
        value = {name: getattr(value, name) for name, info in type(value).model_fields.items()
                 if (info.json_schema_extra or {}).get("cache_key", True)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v, digest) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, digest) for v in value]
    if isinstance(value, InputFile):
        return {"file": value.name, "sha256": digest(value)}
    if isinstance(value, (Path, dt.date)):
        return str(value)
    return value


def stage_key(stage: Stage, config: dict[str, Any], inputs: dict[str, str]) -> str:
    document = {"stage": stage.name, "version": stage.version, "config": config, "inputs": inputs}
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def make_plan(
    variants: list[Variant],
    pipeline: Sequence[Stage],
    digest: Callable[[Path], str],
    until: str | None = None,
) -> Plan:
    check_pipeline(pipeline)
    stages = list(pipeline)
    if until is not None:
        stages = _upstream_of(until, stages)
    planned: dict[str, PlannedStage] = {}
    keys: dict[str, dict[str, str]] = {}
    for variant in variants:
        own: dict[str, str] = {}
        for stage in stages:
            if stage.gather or (stage.when is not None and not stage.when(variant.recipe)) \
                    or any(n not in own for n in stage.needs):
                continue
            config = stage_config(variant.recipe, stage, digest)
            inputs = {need: own[need] for need in stage.needs + stage.optional if need in own}
            key = stage_key(stage, config, inputs)
            own[stage.name] = key
            node = planned.setdefault(key, PlannedStage(stage, key, config, inputs, variant.recipe))
            node.variants.append(variant.name)
        keys[variant.name] = own
    for stage in (s for s in stages if s.gather):
        members = [v for v in variants if all(n in keys[v.name] for n in stage.needs)]
        if not members:
            continue
        inputs = {f"{need}@{v.name}": keys[v.name][need] for v in members
                  for need in stage.needs + stage.optional if need in keys[v.name]}
        config = stage_config(members[0].recipe, stage, digest)
        key = stage_key(stage, config, inputs)
        planned[key] = PlannedStage(stage, key, config, inputs, members[0].recipe, [v.name for v in members])
        for v in members:
            keys[v.name][stage.name] = key
    return Plan(variants[0].recipe.name, variants, list(planned.values()), keys)


def _upstream_of(name: str, stages: list[Stage]) -> list[Stage]:
    by_name = {stage.name: stage for stage in stages}
    if name not in by_name:
        raise InstageoError(f"--until {name}: no such stage, should be one of {list(by_name)}")
    wanted = {name}
    for stage in reversed(stages):
        if stage.name in wanted:
            wanted.update(stage.needs + stage.optional)
    return [stage for stage in stages if stage.name in wanted]


# --- why a stage runs -------------------------------------------------------------------------


class CacheView(Protocol):
    def lookup(self, name: str, key: str) -> tuple[dict | None, str | None]:
        """(manifest, None) for a complete cache entry; (None, why) for a miss."""

    def previous(self, name: str, variant: str) -> dict | None:
        """The manifest of the stage the last run made for this stage and variant."""


@dataclass(frozen=True)
class Decision:
    planned: PlannedStage
    cached: bool
    reason: str


def decide(plan: Plan, cache: CacheView, force: Sequence[str] = ()) -> list[Decision]:
    """For each planned stage: cached or to run, and the reason."""
    decisions: list[Decision] = []
    forced: set[str] = set()
    for planned in plan.stages:
        forced_inputs = [name for name, key in planned.inputs.items() if key in forced]
        if planned.name in force or forced_inputs:
            forced.add(planned.key)
            reason = "forced" if planned.name in force else f"upstream {forced_inputs[0]} forced"
            decisions.append(Decision(planned, False, reason))
            continue
        manifest, miss = cache.lookup(planned.name, planned.key)
        if manifest is not None:
            decisions.append(Decision(planned, True, "up to date"))
            continue
        previous = cache.previous(planned.name, planned.variants[0])
        decisions.append(Decision(planned, False, miss or _why_changed(planned, previous)))
    return decisions


def _why_changed(planned: PlannedStage, previous: dict | None) -> str:
    if previous is None:
        return "new"
    if previous.get("key") == planned.key:
        return "cache entry missing"
    if previous.get("version") != planned.stage.version:
        return f"code version changed ({previous.get('version')} -> {planned.stage.version})"
    changes = diff(previous.get("config", {}), planned.config)
    if changes:
        path, old, new = changes[0]
        more = f" (+{len(changes) - 1} more)" if len(changes) > 1 else ""
        if path.endswith(".sha256"):  # an input file's content
            return f"file of {path.removesuffix('.sha256')} changed{more}"
        return f"config field {path} changed ({_short(old)} -> {_short(new)}){more}"
    changed_inputs = [n for n, k in planned.inputs.items() if previous.get("inputs", {}).get(n) != k]
    if changed_inputs:
        return f"upstream {changed_inputs[0]} changed"
    return "new"


def diff(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Leaf-level differences between two JSON values, as (dotted path, old, new)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for name in sorted(set(old) | set(new)):
            sub = f"{path}.{name}" if path else name
            changes += diff(old.get(name, "<absent>"), new.get(name, "<absent>"), sub)
        return changes
    return [] if old == new else [(path, old, new)]


def _short(value: Any) -> str:
    text = canonical_json(value)
    return text if len(text) <= 40 else text[:37] + "..."
