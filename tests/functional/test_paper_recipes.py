"""The paper's recipes (locust, sen1floods11, crop): given the user's files they validate and
plan offline, without them validation names exactly the files to fetch, and their observation
settings read real samples of each data set (../shared/data)."""

import json
import re

import pytest

from instageo.cli import main
from instageo.data.observations import Labels, read_points, read_polygons, read_rasters
from instageo.pipeline import default_pipeline
from instageo.recipe import load_recipe
from tests.conftest import REPO, SHARED_DATA

FLOODS = SHARED_DATA / "sen1floods11"
# recipe -> (student depths of its sweep, fields naming a file the user supplies)
PAPER = {
    "locust": ([2, 4, 6], ["data.observations.path", "teacher.weights"]),
    "sen1floods11": ([2, 4, 6], ["data.observations.dates", "data.observations.paths", "teacher.weights"]),
    "crop": ([4, 8, 12], ["data.observations.path", "teacher.weights"]),
}


def recipe_path(name: str) -> str:
    return str(REPO / "recipes" / f"{name}.yaml")


def flood_dates(folder) -> str:
    """file,date of each Sen1Floods11 label raster, from its event's s2_date in the metadata."""
    events = json.loads((FLOODS / "Sen1Floods11_Metadata.geojson").read_text())["features"]
    s2_date = {e["properties"]["location"]: e["properties"]["s2_date"].replace("/", "-") for e in events}
    alias = {"Mekong": "Cambodia"}  # the chips name the river, the metadata the country
    path = folder / "s2_dates.csv"
    rows = ["file,date"]
    for label in sorted(FLOODS.glob("*_LabelHand.tif")):
        event = label.name.rsplit("_", 2)[0]
        rows.append(f"{label.name},{s2_date[alias.get(event, event)]}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def user_files(name: str, folder) -> list[str]:
    """--set overrides pointing the recipe at real samples and a stand-in checkpoint."""
    weights = folder / "prithvi.pt"
    weights.write_bytes(b"a stand-in: plan hashes the checkpoint, it does not load it")
    observations = {
        "locust": [f"data.observations.path={SHARED_DATA / 'labels' / 'locust_observations_sample.csv'}"],
        "sen1floods11": [f"data.observations.paths={FLOODS}/*_LabelHand.tif",
                         f"data.observations.dates={flood_dates(folder)}"],
        "crop": [f"data.observations.path={SHARED_DATA / 'labels' / 'kenya_croptype_00.geojson'}"],
    }[name]
    return [*observations, f"teacher.weights={weights}"]


def with_sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


@pytest.fixture(autouse=True)
def no_home_checkpoints(tmp_path, monkeypatch):
    """'~/models/...' must not find a checkpoint a developer happens to have."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("name", PAPER)
def test_recipe_is_documented_and_uses_the_backbones_pretraining_setup(name, tmp_path):
    from instageo.recipe.backbones import BACKBONES

    text = (REPO / "recipes" / f"{name}.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/recipe.schema.json\n")
    header = text.split("\nname:")[0]
    assert "huggingface.co/ibm-nasa-geospatial/Prithvi-EO-" in header and "Expect:" in header
    recipe = load_recipe(recipe_path(name), user_files(name, tmp_path))
    chips, backbone = recipe.data.chips, BACKBONES[recipe.teacher.backbone]
    assert recipe.teacher.backbone.startswith("prithvi_eo_")
    assert tuple(chips.bands) == backbone.bands and chips.size == 224
    assert chips.resolution == (10 if recipe.data.source.preset == "pc-sentinel-2-l2a" else 30)


@pytest.mark.parametrize("name", PAPER)
def test_validate_without_the_users_files_names_each_missing_file(name, capsys):
    assert main(["validate", recipe_path(name)]) == 2
    problems = capsys.readouterr().err.splitlines()
    fields = sorted(re.match(r"^.+?:\d+: ([\w.]+): ", line).group(1) for line in problems)
    assert fields == PAPER[name][1]
    assert all("file not found" in line or "no file matches" in line for line in problems)


@pytest.mark.parametrize("name", PAPER)
def test_validate_and_plan_pass_offline_with_the_users_files(name, tmp_path, capsys):
    depths, _ = PAPER[name]
    overrides = with_sets(user_files(name, tmp_path))
    variants = [f"student.depth={depth}" for depth in depths]

    assert main(["validate", recipe_path(name), *overrides]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{recipe_path(name)}: ok ({name}, 3 variant(s): {', '.join(variants)})"
    )

    runs = tmp_path / "runs"
    assert main(["plan", recipe_path(name), *overrides, "--runs-dir", str(runs)]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["stage", "variants", "key", "status", "reason"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    shared = [(stage, ", ".join(variants)) for stage in ("search", "chips", "teacher")]
    per_student = [(stage, variant) for variant in variants
                   for stage in ("student", "export", "predict", "viewer")]
    timed = [("speed", ", ".join(variants))]  # every model of the sweep, side by side, once
    assert [(row[0], row[1]) for row in rows] == shared + per_student + timed
    optional = {"teacher_export", "teacher_predict", "embeddings", "teacher_embeddings"}  # export.onnx.teacher, .embeddings
    assert {row[0] for row in rows} == {stage.name for stage in default_pipeline()} - optional
    assert all(re.fullmatch(r"[0-9a-f]{12}", row[2]) for row in rows)
    assert len({row[2] for row in rows}) == len(rows)
    assert all(row[3:] == ["run", "new"] for row in rows)
    assert not runs.exists()  # planning writes nothing


def test_locust_settings_read_the_locust_hub_sample(tmp_path):
    recipe = load_recipe(recipe_path("locust"), user_files("locust", tmp_path))
    spec = recipe.data.observations
    observations = read_points(spec.path, spec.x, spec.y, spec.date, spec.label, spec.crs, spec.dates)
    assert len(observations) == 50
    assert sorted({o.label for o in observations}) == [0.0, 1.0]
    assert [recipe.task.classes[int(o.label)] for o in observations].count("present") == 5
    assert (recipe.data.chips.time.steps, recipe.data.chips.time.step_days) == (3, 30)


def test_sen1floods11_settings_read_the_hand_labels_with_their_dates(tmp_path):
    recipe = load_recipe(recipe_path("sen1floods11"), user_files("sen1floods11", tmp_path))
    observations = read_rasters(recipe.data.observations)
    assert len(observations) == 9 and all(o.kind == "raster" for o in observations)
    spain = next(o for o in observations if o.id == "Spain_7370579_LabelHand")
    assert spain.date.isoformat() == "2019-09-18"
    west, south, east, north = recipe.export.predict.bbox
    assert west < spain.lon < east and south < spain.lat < north  # predicts where it was trained


def test_crop_classes_cover_every_crop_of_the_kenya_survey(tmp_path):
    recipe = load_recipe(recipe_path("crop"), user_files("crop", tmp_path))
    observations = read_polygons(recipe.data.observations, Labels.of(recipe), tmp_path / "p.geojson")
    assert len(observations) == 159
    counts = {c: sum(recipe.task.classes[int(o.label)] == c for o in observations) for c in ("Maize", "Cassava")}
    assert counts == {"Maize": 96, "Cassava": 29}
    west, south, east, north = recipe.export.predict.bbox
    assert all(west < o.lon < east and south < o.lat < north for o in observations)
    assert len(recipe.task.colors) == len(recipe.task.classes)
