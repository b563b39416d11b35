"""docs/recipes.md: generated from the recipe model, current, and complete."""

import re

from instageo.recipe.docs import recipe_docs
from instageo.recipe.sweep import sweepable_paths
from tests.conftest import REPO


def test_docs_file_is_current():
    # regenerate with `make docs` after changing instageo/recipe/models.py
    assert (REPO / "docs" / "recipes.md").read_text() == recipe_docs()


def test_every_field_has_one_row_per_kind_with_its_type_and_default():
    rows = {}
    for line in recipe_docs().splitlines():
        match = re.match(r"^\| `([\w.]+)` \| (.*?) \| (.*?) \| (.*?) \| (.*) \|$", line)
        if match:
            rows.setdefault(match.group(1), []).append(match.groups()[1:])
    assert rows["data.chips.size"] == [("integer", "≥ 8; ≤ 4096", "`224`", "chip width and height in pixels")]
    assert rows["name"][0][2] == "required"
    assert len(rows["data.source.kind"]) == 3 and len(rows["data.observations.path"]) == 2
    assert rows["data.chips.mask.strategy"][0][1] == "`each`, `any`"
    assert rows["data.split.test"][0][1] == "≥ 0.0; < 1.0"
    for path in sweepable_paths():  # every sweepable field says so
        assert rows[path][0][0].endswith(", or a list (sweep)"), path
    assert "export.viewer.zoom" in rows and "data.observations.dates.start" in rows
