"""Recipes: the typed model (one module per section), the YAML loader with line numbers,
sweeps and the JSON Schema.

The names below load on first use, so importing one section (``instageo.recipe.export``)
does not import the loader, yaml or the other sections.
"""

from __future__ import annotations

import importlib
import json

__all__ = ["Recipe", "Variant", "expand", "load_recipe", "schema_text"]

_HOMES = {"Recipe": "models", "Variant": "sweep", "expand": "sweep", "load_recipe": "loader"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'instageo.recipe' has no attribute {name!r}")
    return getattr(importlib.import_module(f"instageo.recipe.{_HOMES[name]}"), name)


def schema_text(of: str = "recipe") -> str:
    """The JSON Schema of the recipe, report.json or bundle.json (``instageo.outputs``), as
    `instarun schema` prints it and schemas/ stores it."""
    if of == "recipe":
        from instageo.recipe.models import Recipe as model
    else:
        from instageo.outputs import SCHEMAS

        model = SCHEMAS[of]
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
