"""Recipes: the typed model, the YAML loader with line numbers, sweeps and the JSON Schema."""

from __future__ import annotations

import json

from instageo.recipe.loader import load_recipe
from instageo.recipe.models import Recipe
from instageo.recipe.sweep import Variant, expand

__all__ = ["Recipe", "Variant", "expand", "load_recipe", "schema_text"]


def schema_text() -> str:
    """The recipe's JSON Schema, as `instarun schema` prints it and schemas/ stores it."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Recipe.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
