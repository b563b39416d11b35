"""docs/recipes.md: a reference of every recipe field, generated from the recipe's JSON Schema.

One section per part of the recipe (``data.chips``, ``teacher.train`` ...), in the order the
model declares them; a field that takes one of several kinds (``data.source``) gets one
section per kind. `make docs` writes the file; a test fails when it is stale.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from instageo.recipe.models import Recipe

INTRO = """\
# Recipe reference

Every field of a recipe, generated from the recipe's JSON Schema
([schemas/recipe.schema.json](../schemas/recipe.schema.json)) by `make docs`
(`python -m instageo.recipe.docs > docs/recipes.md`); edit the descriptions in
`instageo/recipe/` (one module per section), not here.

- Unknown fields are errors: `instarun validate` names the field and the closest valid one.
- A field whose type says *or a list (sweep)* accepts a list of values: one variant of the
  recipe per value (`student.depth: [2, 4, 6]`, or `--set student.depth=2,4,6`).
- Paths are relative to the recipe file (`~` is your home folder) and must exist when the
  recipe is loaded; the stages' cache keys hash the files' contents, not their names.
- Any field can be set from the command line: `--set teacher.train.lr=5e-5`.

The paper's recipes show realistic settings: [locust](../recipes/locust.yaml),
[sen1floods11](../recipes/sen1floods11.yaml), [crop](../recipes/crop.yaml).
"""

COLUMNS = "| field | type | allowed | default | description |\n|---|---|---|---|---|"


def recipe_docs() -> str:
    """The text of docs/recipes.md."""
    schema = Recipe.model_json_schema()
    sections: list[str] = []
    _section("", None, schema, schema["$defs"], sections)
    return INTRO + "\n" + "\n".join(sections) + "\n" + backbones_table()


def backbones_table() -> str:
    """The ``teacher.backbone`` names, their architecture and the published checkpoint each
    one loads (from the registry, which a test checks against the official configs)."""
    from instageo.recipe.backbones import BACKBONES

    lines = ["## Backbones (`teacher.backbone`)", "",
             "Each name means what it means in terratorch's registry. `weights` takes the checkpoint "
             "file named here (downloaded once, by you; nothing is fetched at run time).", "",
             "| name | embedding, blocks, heads, patch | temporal + location encoders | published checkpoint |",
             "|---|---|---|---|"]
    for name, spec in BACKBONES.items():
        published = "none (random init only)"
        if spec.published:
            repo, file = spec.published.split()
            published = f"[{repo}](https://huggingface.co/{repo}) `{file}`"
        lines.append(f"| `{name}` | {spec.embed_dim}, {spec.depth}, {spec.num_heads}, {spec.patch_size} | "
                     f"{'yes' if spec.coords else 'no'} | {published} |")
    return "\n".join(lines) + "\n"


def _section(path: str, kind: str | None, model: dict, defs: dict, out: list[str]) -> None:
    title = f"`{path}`" if path else "Top level"
    if kind is not None:
        title += f" with `kind: {kind}`"
    lines = [f"## {title}", ""]
    if model.get("description"):
        lines += [_one_line(model["description"]), ""]
    lines.append(COLUMNS)
    children: list[tuple[str, str | None, dict]] = []
    required = set(model.get("required", []))
    for name, field in model["properties"].items():
        full = f"{path}.{name}" if path else name
        kind_of, allowed, sections = _describe(field, defs)
        children += [(full, tag, section) for tag, section in sections]
        default = "required" if name in required else _default(field, bool(sections))
        description = field.get("description") or _ref_description(field, defs)
        if name == "kind" and kind is not None:
            description = description or f"selects this section's fields: `kind: {kind}`"
        lines.append(f"| `{full}` | {kind_of} | {allowed} | {default} | {_cell(description)} |")
    out.append("\n".join(lines) + "\n")
    for full, tag, section in children:
        _section(full, tag, section, defs, out)


def _describe(field: dict, defs: dict) -> tuple[str, str, list[tuple[str | None, dict]]]:
    """(type, allowed values, sub-sections) of one field's schema."""
    options = [option for option in field.get("anyOf", [field]) if option.get("type") != "null"]
    optional = len(options) < len(field.get("anyOf", [field]))
    if len(options) == 2 and options[1].get("type") == "array" and options[1].get("items") == options[0]:
        kind, allowed, sections = _describe(options[0], defs)  # a Sweep: a value or a list of them
        return f"{kind}, or a list (sweep)", allowed, sections
    if len(options) > 1:
        parts = [_describe(option, defs) for option in options]
        return " or ".join(p[0] for p in parts), "; ".join(p[1] for p in parts if p[1]), []
    option = options[0]
    kind, allowed, sections = _describe_one(option, defs)
    return (f"{kind} or null" if optional else kind), allowed, sections


def _describe_one(option: dict, defs: dict) -> tuple[str, str, list[tuple[str | None, dict]]]:
    if "$ref" in option:
        model = defs[option["$ref"].split("/")[-1]]
        return "section (below)", "", [(None, model)]
    if "oneOf" in option:  # a discriminated union: one section per kind
        tag = option["discriminator"]["propertyName"]
        models = [defs[choice["$ref"].split("/")[-1]] for choice in option["oneOf"]]
        kinds = [model["properties"][tag]["const"] for model in models]
        return (f"section by `{tag}` (below)", ", ".join(f"`{k}`" for k in kinds),
                list(zip(kinds, models)))
    if "const" in option:
        return option.get("type", "value"), f"`{option['const']}`", []
    kind = option.get("type", "any")
    allowed = _constraints(option)
    if "enum" in option:
        allowed = ", ".join(f"`{value}`" for value in option["enum"])
    if kind == "string" and "format" in option:
        kind = {"date": "date (YYYY-MM-DD)", "path": "path"}.get(option["format"], option["format"])
    elif kind == "array" and "prefixItems" in option:
        items = [_describe_one(item, defs) for item in option["prefixItems"]]
        kind = "[" + ", ".join(item[0] for item in items) + "]"
        allowed = _join(*dict.fromkeys(item[1] for item in items if item[1]))
    elif kind == "array":
        item, item_allowed, _ = _describe_one(option.get("items", {}), defs)
        kind = f"list of {item}"
        allowed = _join(f"each: {item_allowed}" if item_allowed else "", allowed)
    elif kind == "object" and isinstance(option.get("additionalProperties"), dict):
        kind = f"map of string to {option['additionalProperties'].get('type', 'any')}"
    return kind, allowed, []


def _constraints(option: dict) -> str:
    bounds = [("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"),
              ("exclusiveMaximum", "< {}"), ("minLength", "at least {} characters"),
              ("maxLength", "at most {} characters"), ("pattern", "matches `{}`")]
    if option.get("type") == "array" and "prefixItems" not in option:
        bounds += [("minItems", "at least {} item(s)"), ("maxItems", "at most {} item(s)")]
    return _join(*(text.format(option[key]) for key, text in bounds if key in option))


def _default(field: dict, is_section: bool) -> str:
    if "default" not in field:
        return ""
    if is_section and isinstance(field["default"], dict):
        return "(its fields' defaults)"
    return f"`{json.dumps(field['default'], ensure_ascii=False)}`"


def _ref_description(field: dict, defs: dict) -> str:
    """A section without its own description takes its model's docstring."""
    ref = field.get("$ref") or next((o["$ref"] for o in field.get("anyOf", []) if "$ref" in o), None)
    return defs[ref.split("/")[-1]].get("description", "") if ref else ""


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(recipe_docs())
