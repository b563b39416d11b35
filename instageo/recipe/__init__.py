"""Recipes: the typed model, the YAML loader with line numbers, sweeps and the JSON Schema."""

from __future__ import annotations

import json

from instageo.recipe.loader import load_recipe
from instageo.recipe.models import Recipe
from instageo.recipe.sweep import Variant, expand

__all__ = ["Recipe", "Variant", "expand", "load_recipe", "schema_text"]


def schema_text(of: str = "recipe") -> str:
    """The JSON Schema of the recipe, report.json or bundle.json (``instageo.outputs``), as
    `instarun schema` prints it and schemas/ stores it."""
    if of == "recipe":
        model = Recipe
    else:
        from instageo.outputs import SCHEMAS

        model = SCHEMAS[of]
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
