import json

import pytest

from instageo.errors import RecipeError
from instageo.recipe import expand, load_recipe, schema_text
from instageo.recipe.sweep import sweepable_paths
from tests.conftest import REPO

MINIMAL = """
name: r
data:
  source: {kind: demo}
"""


def problems(path, overrides=None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate_and_declare_the_schema(recipe):
    assert recipe.read_text().startswith("# yaml-language-server: $schema=../schemas/recipe.schema.json")
    if recipe.stem in ("locust", "sen1floods11", "crop"):
        return  # they read the user's data and checkpoint: tests/functional/test_paper_recipes.py
    load_recipe(recipe)


def test_schema_file_is_current():
    assert (REPO / "schemas" / "recipe.schema.json").read_text() == schema_text()
    schema = json.loads(schema_text())
    assert schema["additionalProperties"] is False and "data" in schema["required"]


def test_defaults_fill_a_minimal_recipe(write_recipe):
    recipe = load_recipe(write_recipe(MINIMAL))
    assert recipe.data.chips.size == 224 and recipe.data.chips.time.steps == 1
    assert recipe.student.depth == 4


def test_misspelt_key_wrong_type_and_bad_range_are_all_reported_with_lines(write_recipe):
    path = write_recipe("""
        name: r
        data:
          source: {kind: demo}
          chips:
            size: -3
            time:
              tolerance_dys: 4
        teacher:
          train: {epochs: ten}
        """)
    found = problems(path)
    assert found == [
        f"{path}:5: data.chips.size: should be greater than or equal to 8, got -3",
        f"{path}:7: data.chips.time.tolerance_dys: unknown field 'tolerance_dys'; "
        "did you mean 'tolerance_days'?",
        f"{path}:9: teacher.train.epochs: should be a valid integer, unable to parse string "
        "as an integer, got 'ten'",
    ]


def test_ranges_dates_and_files_are_checked_before_any_work(write_recipe):
    path = write_recipe("""
        name: r
        data:
          source: {kind: catalog, path: missing/catalog.json}
          observations:
            kind: points
            path: obs.csv
            dates: {start: 2023-05-01, end: 2023-01-01}
          chips: {time: {steps: 0}}
        """)
    found = "\n".join(problems(path))
    assert f"{path}:3: data.source.path: file not found: {path.parent}/missing/catalog.json" in found
    assert f"{path}:6: data.observations.path: file not found" in found
    assert f"{path}:7: data.observations.dates.end: end 2023-01-01 is before start 2023-05-01" in found
    assert f"{path}:8: data.chips.time.steps: should be greater than or equal to 1, got 0" in found


def test_relative_paths_resolve_against_the_recipe_folder(write_recipe, tmp_path):
    (tmp_path / "obs.csv").write_text("x,y,date,label\n")
    recipe = load_recipe(write_recipe(MINIMAL + "  observations: {kind: points, path: obs.csv}\n"))
    assert recipe.data.observations.path == tmp_path / "obs.csv"


def test_label_raster_patterns_expand_to_the_files_they_match(write_recipe, tmp_path):
    (tmp_path / "labels").mkdir()
    for name in ("b_Label.tif", "a_Label.tif", "a_Image.tif"):
        (tmp_path / "labels" / name).write_bytes(b"")
    raster = "  observations: {kind: raster, date: 2020-01-01, paths: [labels/*_Label.tif]}\n"
    recipe = load_recipe(write_recipe(MINIMAL + raster))
    assert recipe.data.observations.paths == [tmp_path / "labels" / n for n in ("a_Label.tif", "b_Label.tif")]
    path = write_recipe(MINIMAL + raster.replace("*_Label", "*_Mask"))
    assert problems(path) == [
        f"{path}:4: data.observations.paths: no file matches {tmp_path}/labels/*_Mask.tif"
    ]


def test_colours_must_match_the_classes_one_to_one(write_recipe):
    path = write_recipe(MINIMAL + "task: {classes: [a, b, c], colors: ['#000000', '#ffffff']}\n")
    assert problems(path) == [f"{path}:4: task.colors: 2 colour(s) for 3 classes: give one per class, or none"]


def test_unknown_kind_lists_the_valid_ones(write_recipe):
    path = write_recipe("name: r\ndata:\n  source:\n    kind: stacc\n")
    assert problems(path) == [
        f"{path}:4: data.source.kind: kind 'stacc' is not valid, "
        "should be one of ['demo', 'catalog', 'stac']"
    ]


def test_fields_of_the_chosen_kind_are_suggested(write_recipe):
    path = write_recipe("name: r\ndata:\n  source: {kind: stac, url: 'https://x', collection: [a]}\n")
    assert f"{path}:3: data.source.collection: unknown field 'collection'; did you mean 'collections'?" in problems(path)


def test_missing_required_fields_name_the_field(write_recipe):
    path = write_recipe("data:\n  source: {kind: stac, collections: [a]}\n")
    assert problems(path) == [
        f"{path}:1: name: required field is missing",
        f"{path}:2: data.source.url: required field is missing",
    ]


@pytest.mark.parametrize("content, expected", [
    (b"name: r\ndata: {source: {kind: demo}\n", ":3: invalid YAML"),
    (b"name: r\n\xff\xfe: 1\n", ":2: not valid UTF-8"),
    (b"- a\n- b\n", ":1: a recipe must be a mapping"),
    (b"", ":1: a recipe must be a mapping"),
    (b"name: r\nname: s\ndata: {source: {kind: demo}}\n", ":2: name: duplicate key"),
])
def test_unreadable_recipes_get_one_located_line(tmp_path, content, expected):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}{expected}")


def test_set_overrides_are_typed_by_the_schema(write_recipe):
    recipe = load_recipe(write_recipe(MINIMAL), ["data.chips.size=64", "teacher.train.lr=3e-4",
                                                 "export.onnx.quantize=true"])
    assert recipe.data.chips.size == 64 and recipe.teacher.train.lr == 3e-4
    assert recipe.export.onnx.quantize is True


def test_set_with_commas_makes_a_sweep(write_recipe):
    recipe = load_recipe(write_recipe(MINIMAL), ["student.depth=2,4,6"])
    assert [v.recipe.student.depth for v in expand(recipe)] == [2, 4, 6]


def test_bad_set_values_are_blamed_on_the_option(write_recipe):
    path = write_recipe(MINIMAL)
    assert problems(path, ["student.depth=x"]) == [
        "--set student.depth: student.depth: should be a valid integer, unable to parse "
        "string as an integer, got 'x'"
    ]
    assert problems(path, ["nodot"]) == ["--set nodot: expected KEY=VALUE, e.g. student.depth=2,4"]
    assert problems(path, ["name.x=1"]) == ["--set name.x=1: 'name' is not a section"]


def test_sweep_values_are_validated_one_by_one(write_recipe):
    path = write_recipe(MINIMAL + "student: {depth: [2, 0]}\n")
    assert problems(path) == [f"{path}:4: student.depth.1: should be greater than or equal to 1, got 0"]


def test_sweeps_expand_to_the_product_of_their_values(write_recipe):
    recipe = load_recipe(write_recipe(MINIMAL + "student: {depth: [2, 4], distill: {alpha: [0.3, 0.7]}}\n"))
    variants = expand(recipe)
    assert [v.params for v in variants] == [
        {"student.depth": d, "student.distill.alpha": a} for d in (2, 4) for a in (0.3, 0.7)
    ]
    assert variants[0].name == "student.depth=2,student.distill.alpha=0.3"
    assert all(isinstance(v.recipe.student.depth, int) for v in variants)


def test_sweepable_fields_are_found_from_the_model():
    assert {"student.depth", "teacher.train.lr", "student.distill.temperature"} <= set(sweepable_paths())


def test_split_sets_and_prediction_areas_are_checked_at_load(write_recipe):
    path = write_recipe(MINIMAL)
    found = problems(path, ["data.split.test={files: []}"])
    assert any("data.split.test" in p and "name chips by files, regions or ids" in p for p in found), found
    found = problems(path, ["data.split.val={regions: [[10, 0, 9, 1]]}"])
    assert any("west < east" in p for p in found), found
    found = problems(path, ["export.predict.areas=[[0, 0, 1, 1]]", "export.predict.bbox=[0, 0, 1, 1]"])
    assert any("give areas, or bbox / geojson, not both" in p for p in found), found
    recipe = load_recipe(path, ["data.split.test={files: ['Spain_*']}", "seed=0,1"])
    assert recipe.data.split.test.files == ["Spain_*"] and recipe.seed == [0, 1]
    assert [v.recipe.seed for v in expand(recipe)] == [0, 1]
