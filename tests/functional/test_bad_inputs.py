"""Bad inputs through the CLI: malformed recipes, observation files and rasters.

Every case runs `instarun` in-process (``main(argv)``) and must end in exit 2 with one line per
problem naming the file (and its line, or the recipe field, where there is one) and no
traceback; a bad catalogue asset may instead be a skipped chip with a reason. Recipes are
mutations of recipes/tiny.yaml made by hypothesis (derandomized: the same cases on every run).
A mutation that leaves the recipe valid must exit 0; generators are built so the expected
outcome is known, except random character insertions into the YAML text.

Each case is counted (tried / rejected cleanly) per category; the table is printed at the end
of the module (pytest -s) and written to $INSTAGEO_BAD_INPUTS_TABLE when that is set.
"""

from __future__ import annotations

import io
import json
import os
import re
import string
import typing
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from instageo.cli import main
from instageo.recipe.models import Recipe
from tests.conftest import REPO

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
TINY_TEXT = (REPO / "recipes" / "tiny.yaml").read_text()
TINY = yaml.safe_load(TINY_TEXT)
NEGATIVE_OK = {"data.chips.label.ignore_index"}  # the only numbers that may be negative
TRIED: Counter = Counter()
CLEAN: Counter = Counter()


# --- running and judging ----------------------------------------------------------------------


def instarun(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except BaseException as exc:  # noqa: BLE001 - an escaped exception is what we look for
            import traceback

            traceback.print_exc(file=err)
            code = f"escaped {type(exc).__name__}"
    return code, out.getvalue(), err.getvalue()


def rejected(code, err: str, path: Path, where: str | None = None, last_line_only: bool = False) -> bool:
    """Exit 2; each (or the last) stderr line names ``path``; ``where`` (a field, a line
    number, a phrase) appears in one of them; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    if code != 2 or not lines or "Traceback" in err:
        return False
    judged = lines[-1:] if last_line_only else lines
    located = re.compile(rf"^(error: )?{re.escape(str(path))}(:\d+)?(: |$)")
    if not all(located.match(line) for line in judged):
        return False
    return where is None or any(where in line for line in judged)


def check(category: str, ok: bool, detail: str) -> None:
    TRIED[category] += 1
    CLEAN[category] += ok
    assert ok, detail


@pytest.fixture(scope="module", autouse=True)
def count_table(tmp_path_factory):
    yield
    rows = ["| category | tried | rejected cleanly |", "|---|---:|---:|"]
    rows += [f"| {name} | {TRIED[name]} | {CLEAN[name]} |" for name in sorted(TRIED)]
    rows.append(f"| **total** | {sum(TRIED.values())} | {sum(CLEAN.values())} |")
    table = "\n".join(rows) + "\n"
    print("\nbad inputs:\n" + table)
    if os.environ.get("INSTAGEO_BAD_INPUTS_TABLE"):
        target = Path(os.environ["INSTAGEO_BAD_INPUTS_TABLE"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(table)


class Files:
    """Unique file names in one folder (hypothesis runs many examples per test)."""

    def __init__(self, folder: Path):
        self.folder, self.count = folder, 0

    def path(self, suffix: str) -> Path:
        self.count += 1
        return self.folder / f"case{self.count:04d}{suffix}"

    def write(self, content: bytes | str, suffix: str = ".yaml") -> Path:
        path = self.path(suffix)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return Files(tmp_path_factory.mktemp("bad"))


# --- recipes --------------------------------------------------------------------------------


def leaves(node, key=()) -> list[tuple[tuple, typing.Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in leaves(v, key + (k,))]
    return [(key, node)]


def sections(node, key=()) -> list[tuple]:
    if not isinstance(node, dict):
        return []
    return [key] + [s for k, v in node.items() for s in sections(v, key + (k,))]


def _submodels(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _submodels(arg)]


def _scalar(annotation) -> type | None:
    """int or float when a field takes a number (a sweep's scalar branch included)."""
    if annotation in (int, float):
        return annotation
    if typing.get_origin(annotation) in (list, tuple):
        return None
    for arg in typing.get_args(annotation):
        found = _scalar(arg)
        if found:
            return found
    return None


def numeric_fields(model: type[BaseModel] = Recipe, data=TINY, key=()) -> list[tuple[tuple, type]]:
    """Every int/float field of the models tiny.yaml uses (following each union's 'kind')."""
    found = []
    for name, field in model.model_fields.items():
        path, node = key + (name,), (data or {}).get(name) if isinstance(data, dict) else None
        models = _submodels(field.annotation)
        if models:
            kind = node.get("kind") if isinstance(node, dict) else None
            chosen = [m for m in models if "kind" not in m.model_fields
                      or kind in typing.get_args(m.model_fields["kind"].annotation)
                      or (kind is None and m.model_fields["kind"].default is not None
                          and len(models) > 1 and m.model_fields["kind"].default == "local")]
            if len(chosen) == 1:
                found += numeric_fields(chosen[0], node, path)
        if (kind := _scalar(field.annotation)) is not None and field.annotation is not bool:
            found.append((path, kind))  # a number, or a number or a section (split.val, split.test)
    return found


NUMERIC = numeric_fields()
STRING_LEAVES = [key for key, value in leaves(TINY) if isinstance(value, str)]
LIST_LEAVES = [key for key, value in leaves(TINY) if isinstance(value, list)]
NON_NUMBERS = st.text(string.ascii_letters, min_size=1, max_size=8)


def with_value(key: tuple, value) -> dict:
    data = json.loads(json.dumps(TINY))
    node = data
    for part in key[:-1]:
        node = node.setdefault(part, {"kind": "local"} if part == "executor" else {})
    node[key[-1]] = value
    return data


def dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dotted(key: tuple) -> str:
    return ".".join(str(k) for k in key)


def check_recipe(category: str, files: Files, content, where: str | None = None,
                 valid: bool | None = False) -> None:
    """`validate` and `plan` on one recipe: exit 0 if ``valid``, else exit 2 located (either
    when ``valid`` is None)."""
    path = files.write(content)
    for command in (["validate", path], ["plan", path, "--runs-dir", files.folder / "runs"]):
        code, _, err = instarun(*command)
        clean = rejected(code, err, path, where)
        ok = code == 0 if valid else (clean or (valid is None and code == 0))
        check(f"recipe: {category}", ok, f"{command[0]} {content!r}: exit {code}\n{err}")


@SETTINGS
@given(st.data())
def test_wrong_types_are_located(files, data):
    if data.draw(st.booleans(), "numeric"):
        key, _ = data.draw(st.sampled_from(NUMERIC), "field")
        value = data.draw(st.one_of(NON_NUMBERS, st.just({"a": 1}), st.just([{"a": 1}])))
    else:
        key = data.draw(st.sampled_from(STRING_LEAVES + LIST_LEAVES), "field")
        value = data.draw(st.sampled_from([{"a": 1}, [{"a": 1}], {"x": [1]}]))
    check_recipe("wrong types", files, dump(with_value(key, value)), dotted(key))


@SETTINGS
@given(st.data())
def test_unknown_and_misspelt_keys_are_named(files, data):
    section = data.draw(st.sampled_from(sections(TINY)), "section")
    node = TINY
    for part in section:
        node = node[part]
    from instageo.recipe.messages import _allowed_fields

    allowed = set(_allowed_fields(section, TINY))
    if data.draw(st.booleans(), "misspell") and node:
        real = data.draw(st.sampled_from(sorted(node)), "key")
        i = data.draw(st.integers(0, len(real) - 1), "at")
        edit = data.draw(st.sampled_from(["drop", "double", "swap", "replace"]), "edit")
        letter = data.draw(st.sampled_from(string.ascii_lowercase + "_"), "letter")
        name = {"drop": real[:i] + real[i + 1:], "double": real[:i] + real[i] + real[i:],
                "swap": real[:i] + real[i + 1:i + 2] + real[i] + real[i + 2:],
                "replace": real[:i] + letter + real[i + 1:]}[edit]
        assume(name and name not in allowed and name not in node)
        mutated = {(name if k == real else k): v for k, v in node.items()}
        category = "misspelt keys"
    else:
        name = data.draw(st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True), "name")
        assume(name not in allowed)
        mutated = {**node, name: data.draw(st.sampled_from([1, "x", [1], {"a": 1}]))}
        category = "unknown keys"
    recipe = json.loads(json.dumps(TINY))
    if section:
        with_parent = recipe
        for part in section[:-1]:
            with_parent = with_parent[part]
        with_parent[section[-1]] = mutated
    else:
        recipe = mutated
    check_recipe(category, files, dump(recipe), dotted(section) or None)


@SETTINGS
@given(st.data())
def test_huge_and_negative_numbers_are_refused(files, data):
    key, kind = data.draw(st.sampled_from(NUMERIC), "field")
    if data.draw(st.booleans(), "huge"):
        huge = st.integers(10, 400).map(lambda k: 10**k) if kind is int else st.nothing()
        value = data.draw(st.one_of(huge, st.sampled_from([float("inf"), float("nan"), "1.0e+999"])))
        category = "huge numbers"
        valid = False
    else:
        value = data.draw(st.one_of(st.integers(-10**30, -1), st.floats(-1e300, -1e-6)))
        value = int(value) if kind is int else value
        category = "negative numbers"
        valid = dotted(key) in NEGATIVE_OK and value >= -32768
    text = dump(with_value(key, value)).replace("'1.0e+999'", "1.0e+999")
    check_recipe(category, files, text, None if valid else dotted(key), valid)


@SETTINGS
@given(st.data())
def test_empty_lists_are_refused(files, data):
    key = data.draw(st.sampled_from(LIST_LEAVES + [k for k, _ in NUMERIC] + STRING_LEAVES), "field")
    check_recipe("empty lists", files, dump(with_value(key, [])), dotted(key))


@SETTINGS
@given(st.data())
def test_bad_dates_are_refused(files, data):
    key = ("export", "predict", "date")
    year = data.draw(st.integers(1000, 9999), "year")
    month, day = data.draw(st.sampled_from([(13, 1), (0, 5), (2, 30), (4, 31), (1, 32), (12, 0)]))
    bad = f"{year}-{month:02d}-{day:02d}"
    if data.draw(st.booleans(), "quoted"):  # a string pydantic parses, or a YAML timestamp
        text = dump(with_value(key, data.draw(st.one_of(st.just(bad), NON_NUMBERS))))
        check_recipe("bad dates", files, text, dotted(key))
    else:
        text = TINY_TEXT + f"\nexport: {{predict: {{date: {bad}}}}}\n"
        text = text.replace("export:\n  viewer: {zoom: [11, 12]}\n", "")
        check_recipe("bad dates", files, text, f":{text.count(chr(10))}: invalid YAML")


@SETTINGS
@given(st.sampled_from([("teacher", "weights"), ("export", "predict", "geojson")]),
       st.from_regex(r"[a-z0-9_/.]{1,20}", fullmatch=True))
def test_missing_paths_are_refused(files, key, name):
    assume(not (files.folder / name).exists())
    check_recipe("missing paths", files, dump(with_value(key, name)), dotted(key))


@SETTINGS
@given(st.integers(0, len(TINY_TEXT)), st.binary(min_size=1, max_size=4))
def test_non_utf8_bytes_are_refused(files, at, junk):
    try:
        junk.decode("utf-8")
        assume(False)
    except UnicodeDecodeError:
        pass
    raw = TINY_TEXT.encode()
    check_recipe("non-UTF-8 bytes", files, raw[:at] + junk + raw[at:], "not valid UTF-8")


@pytest.mark.parametrize("content", [
    b"", b"\n\n", b"# only a comment\n", b"- name: tiny\n", b"42\n", b"null\n", b"~\n",
    b"'tiny'\n", b"[]\n", b"{}\n", b"\xef\xbb\xbf", b"name: tiny\n---\nname: again\n",
    b"[" * 3000 + b"]" * 3000 + b"\n",
])
def test_recipes_that_are_not_a_mapping_are_refused(files, content):
    check_recipe("not a mapping", files, content)


BROKEN_YAML = [
    ("unclosed flow", lambda line: re.sub(r": (.+)$", r": [\1", line)),
    ("tab indent", lambda line: "\t" + line),
    ("sequence in a mapping", lambda line: line + "\n- stray"),
    ("unclosed quote", lambda line: re.sub(r": (.+)$", r": '\1", line)),
    ("bad indent", lambda line: line + "\n      extra: 1\n  oops: 2"),
]


@SETTINGS
@given(st.sampled_from(BROKEN_YAML), st.data())
def test_broken_yaml_is_refused(files, breaker, data):
    lines = TINY_TEXT.splitlines()
    candidates = [i for i, line in enumerate(lines) if re.match(r"^\s*[a-z_]+: \S", line)]
    i = data.draw(st.sampled_from(candidates), "line")
    lines[i] = breaker[1](lines[i])
    check_recipe("broken YAML", files, "\n".join(lines) + "\n", None)


@SETTINGS
@given(st.integers(0, len(TINY_TEXT)), st.text(":{}[]'\"&*!%@`|>#,-?\t\n ", min_size=1, max_size=3))
def test_random_yaml_punctuation_exits_0_or_located_2(files, at, junk):
    check_recipe("random punctuation (0 or 2)", files, TINY_TEXT[:at] + junk + TINY_TEXT[at:], valid=None)


@SETTINGS
@given(st.data())
def test_duplicate_keys_are_refused(files, data):
    lines = dump(TINY).splitlines()
    candidates = [i for i, line in enumerate(lines) if re.match(r"^\s*[a-z_]+: \S", line)]
    i = data.draw(st.sampled_from(candidates), "line")
    lines.insert(i + 1, lines[i])
    check_recipe("duplicate keys", files, "\n".join(lines) + "\n", f":{i + 2}: ")


def test_a_valid_mutation_exits_0(files):
    check_recipe("valid mutations", files, dump(with_value(("student", "depth"), [1])), valid=True)
    check_recipe("valid mutations", files, dump(with_value(("data", "chips", "label", "ignore_index"), -5)),
                 valid=True)


# --- observation files through the search stage ------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from instageo.data import demo

    return demo.generate(tmp_path_factory.mktemp("scene"), seed=1, size=64, acquisitions=2, points=6)


def observation_recipe(files: Files, scene, observations: str) -> Path:
    return files.write(f"""
name: bad-observations
data:
  source: {{kind: catalog, path: {scene.catalog}}}
  observations: {observations}
  chips: {{size: 16, resolution: 30, time: {{steps: 1, step_days: 30, tolerance_days: 20}}}}
task: {{classes: [other, water, vegetation]}}
teacher: {{backbone: instageo_ci}}
student: {{depth: 1}}
""")


def run_until(files: Files, recipe: Path, stage: str) -> tuple[int, str, str]:
    return instarun("run", recipe, "--runs-dir", files.folder / "runs", "--until", stage)


def check_observations(category: str, files: Files, scene, content: bytes | str, where=None,
                       suffix=".csv", kind="points"):
    bad = files.write(content, suffix)
    recipe = observation_recipe(files, scene, f"{{kind: {kind}, path: {bad}}}")
    code, _, err = run_until(files, recipe, "search")
    check(f"observations: {category}", rejected(code, err, bad, where, last_line_only=True),
          f"{content!r}: exit {code}\n{err}")


def _csv(rows: list[list[str]]) -> str:
    return "".join(",".join(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def rows(scene) -> list[list[str]]:
    return [line.split(",") for line in scene.observations.read_text().splitlines()]


def test_the_unmutated_observations_pass(files, scene):
    recipe = observation_recipe(files, scene, f"{{kind: points, path: {scene.observations}}}")
    code, _, err = run_until(files, recipe, "search")
    assert code == 0, err


@settings(SETTINGS, max_examples=60)
@given(st.data())
def test_malformed_point_files_are_refused_with_file_and_line(files, scene, rows, data):
    header, body = rows[0], [list(r) for r in rows[1:]]
    i = data.draw(st.integers(0, len(body) - 1), "row")
    line = f":{i + 2}: "
    kind = data.draw(st.sampled_from(["missing column", "bad coordinates", "bad dates", "bad labels",
                                      "duplicated rows", "extra cells", "non-UTF-8", "empty"]))
    if kind == "missing column":
        column = header.index(data.draw(st.sampled_from(["x", "y", "date"])))
        content, line = _csv([r[:column] + r[column + 1:] for r in [header] + body]), ":1: "
    elif kind == "bad coordinates":
        column = header.index(data.draw(st.sampled_from(["x", "y"])))
        body[i][column] = data.draw(st.one_of(
            st.sampled_from(["200", "-91", "181", "nan", "inf", "-inf", "1e400", ""]), NON_NUMBERS,
            st.floats(min_value=181, max_value=1e300).map(str)))
        content = _csv([header] + body)
    elif kind == "bad dates":
        body[i][header.index("date")] = data.draw(st.one_of(
            NON_NUMBERS, st.sampled_from(["2023-02-30", "2023-13-01", "23-01-01", "01/02/2023", "",
                                          "9999-12-31", "0001-01-01"])))
        content = _csv([header] + body)
    elif kind == "bad labels":  # names and indices of task.classes are fine; anything else is not
        body[i][header.index("label")] = data.draw(st.one_of(
            NON_NUMBERS.filter(lambda t: t not in ("other", "water", "vegetation")),
            st.sampled_from(["nan", "inf", "3", "-1", "1.5", "7"])))
        content = _csv([header] + body)
    elif kind == "duplicated rows":
        copy = list(body[i])
        if data.draw(st.booleans(), "same id"):
            copy[header.index("x")] = str(float(copy[header.index("x")]) + 0.001)  # same id elsewhere
        else:
            copy[header.index("id")] = "another"  # the same observation under another id
        j = data.draw(st.integers(i + 1, len(body)), "at")
        body.insert(j, copy)
        content, line = _csv([header] + body), f":{j + 2}: "
    elif kind == "extra cells":
        body[i].append("surplus")
        content = _csv([header] + body)
    elif kind == "non-UTF-8":
        raw = _csv([header] + body).encode()
        at = data.draw(st.integers(0, len(raw)), "byte")
        content, line = raw[:at] + b"\xff\xfe" + raw[at:], "UTF-8"
    else:
        content = data.draw(st.sampled_from(["", "\n", _csv([header]), "\ufeff"]))
        line = None
    check_observations(kind, files, scene, content, line)


POLYGON = {"type": "Feature", "properties": {"label": "water", "date": "2023-01-19"},
           "geometry": {"type": "Polygon", "coordinates": [[[39.90, 1.43], [39.91, 1.43], [39.91, 1.44],
                                                              [39.90, 1.43]]]}}


def _polygons(*features, **extra) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features), **extra})


def _feature(**changes) -> dict:
    feature = json.loads(json.dumps(POLYGON))
    feature["properties"].update({k: v for k, v in changes.items() if k not in feature})
    feature.update({k: v for k, v in changes.items() if k in feature})
    return feature


BOWTIE = _feature(geometry={"type": "Polygon", "coordinates": [[[39.90, 1.43], [39.91, 1.44], [39.91, 1.43],
                                                                [39.90, 1.44], [39.90, 1.43]]]})
POINT = _feature(geometry={"type": "Point", "coordinates": [39.9, 1.43]})
LINE = _feature(geometry={"type": "LineString", "coordinates": [[39.9, 1.43], [39.91, 1.44]]})



@pytest.mark.parametrize("content", [
    "", "not json", "[]", "{}", '{"features": 5}', '{"features": [1]}', _polygons(),
    _polygons(_feature(geometry=None)), _polygons(_feature(geometry={"type": "Polygon"})),
    _polygons(_feature(geometry={"type": "Point", "coordinates": [39.9, 200]})),
    _polygons(_feature(geometry={"type": "Point", "coordinates": [float("nan"), 1.4]})),
    _polygons(_feature(label="cloud")), _polygons(_feature(label=7)), _polygons(_feature(date="someday")),
    _polygons(_feature(date="2023-02-30")), _polygons(_feature(properties=[1])),
    _polygons(_feature(), crs="EPSG:4326"), _polygons(_feature(), crs={"properties": {"name": "EPSG:99999"}}),
    b"\xff\xfe{}", *(_polygons(feature) for feature in (BOWTIE, POINT, LINE)), _polygons(_feature(), _feature()),
])
def test_malformed_polygon_files_are_refused(files, scene, content):
    category = "polygons (GeoJSON)"
    check_observations(category, files, scene, content, suffix=".geojson", kind="polygons")


@pytest.mark.parametrize("features, reason", [
    ([BOWTIE], "feature 0: invalid polygon (Self-intersection"),
    ([POINT], "feature 0: a Point, not a polygon"),
    ([_feature(), _feature(label="vegetation")], "feature 1: duplicate of feature 0"),
])
def test_invalid_and_duplicate_polygons_are_refused_with_the_reason(files, scene, features, reason, capsys):
    """Were accepted: a self-intersecting polygon (its area is ambiguous), a point as a
    polygon, and one polygon twice (as duplicate points are refused)."""
    bad = files.write(_polygons(*features), ".geojson")
    code, _, err = run_until(files, observation_recipe(files, scene, f"{{kind: polygons, path: {bad}}}"), "search")
    assert code == 2 and f"{bad}: {reason}" in err, err


def test_a_bad_label_stops_the_run_before_the_search_stage(files, scene, rows):
    header, body = rows[0], [list(r) for r in rows[1:]]
    body[2][header.index("label")] = "5"  # a 3-class task
    bad = files.write(_csv([header] + body), ".csv")
    recipe = observation_recipe(files, scene, f"{{kind: points, path: {bad}}}")
    runs = files.folder / "runs-label"
    code, _, err = instarun("run", recipe, "--runs-dir", runs)
    assert code == 2 and f"{bad}:4: label '5' is not one of task.classes" in err and "Traceback" not in err, err
    assert not list(runs.glob("*/stages/search-*"))  # nothing searched, nothing built
    code, _, err = instarun("validate", recipe)
    assert code == 2 and f"{bad}:4:" in err


NEW_FIELD_CASES = [  # (dotted field, bad value, what the message says)
    ("data.split.test", {"files": []}, "name chips by files, regions or ids"),
    ("data.split.val", {"regions": [[10, 0, 9, 1]]}, "west < east"),
    ("data.split.test", {"ids": "c1"}, "data.split.test"),
    ("data.split.seed", -1, "data.split.seed"),
    ("data.chips.shift", -1, "data.chips.shift"),
    ("data.chips.min_observations", 0, "data.chips.min_observations"),
    ("data.chips.time.tolerance_minutes", -5, "data.chips.time.tolerance_minutes"),
    ("data.chips.time.daytime_only", "sometimes", "data.chips.time.daytime_only"),
    ("data.split.method", "kmeans", "data.split.method"),
    ("data.chips.placement", "hex", "data.chips.placement"),
    ("data.chips.shift", "half", "data.chips.shift"),
    ("teacher.train.smooth", 0, "teacher.train.smooth"),
    ("teacher.normalize", "pretrain", "teacher.normalize"),
    ("export.predict.areas", [], "at least one box"),
    ("export.predict.areas", [[39.9, 1.4, 39.8, 1.5]], "west < east"),
    ("seed", [0, -1], "seed"),
]


# values that were accepted and then failed late (a traceback, or exit 1 after training)
LATE_FAILURES = [
    ("export.predict.date", "9999-12-31", "not between 1900 and 2100"),
    ("export.predict.date", "0001-01-01", "not between 1900 and 2100"),
    ("data.chips.crs", "foo", "is not a known CRS"),
    ("data.chips.crs", "EPSG:4326", "is not projected"),
    ("task.colors", ["#zzzzzz", "#000000", "#ffffff"], "is not a '#rrggbb' colour"),
    ("data.split.gap_km", 1e9, "data.split.gap_km"),
    ("student.distill.temperature", 1e300, "student.distill.temperature"),
    ("data.chips.resolution", 1e-9, "data.chips.resolution"),
    ("export.predict.bbox", [200, 0, 300, 10], "outside -180..180"),
    ("task.classes", ["a", "a", "b"], "class names repeated"),
    ("data.chips.size", True, "true/false is not a number"),
    ("student.depth", True, "true/false is not a number"),
]
NEW_FIELD_CASES += LATE_FAILURES


@pytest.mark.parametrize("key, value, says", NEW_FIELD_CASES, ids=[f"{k}={v}" for k, v, _ in NEW_FIELD_CASES])
def test_new_fields_are_refused_with_their_name(files, key, value, says):
    content = dump(with_value(tuple(key.split(".")), value))
    check_recipe("new fields", files, content, key)
    code, _, err = instarun("validate", files.write(content))
    assert code == 2 and says in err, err


def test_more_chips_than_memory_holds_is_refused_before_any_work(files, scene):
    """Was accepted, then the teacher stage grew memory until the machine gave out."""
    recipe = Path(str(observation_recipe(files, scene, f"{{kind: points, path: {scene.observations}}}")))
    text = recipe.read_text().replace("size: 16, resolution: 30, time: {steps: 1,", "size: 4096, resolution: 30, "
                                      "time: {steps: 64,")
    recipe.write_text(text)
    code, _, err = instarun("run", recipe, "--runs-dir", files.folder / "memory-runs")
    assert code == 2 and "data.observations: " in err and "GiB to train" in err and "data.chips.size" in err, err
    assert not (files.folder / "memory-runs" / "bad-observations" / "stages").exists()  # nothing started
    code, _, err = instarun("plan", recipe, "--runs-dir", files.folder / "memory-runs")
    assert code == 0, err  # planning is not training


@pytest.mark.parametrize("observations, says", [
    ("{kind: points, path: OBS, remap: {0: forest}}", "label 'forest' is not one of task.classes"),
    ("{kind: points, path: OBS, date: survey}", "missing column(s) ['survey']"),
    ("{kind: points, path: OBS, time: hour}", "missing column(s) ['hour']"),
    ("{kind: points, path: OBS, time: label}", "label '0' is not a UTC time of day"),
    ("{kind: polygons, path: POLY, label: nope}", "no property 'nope'"),
    ("{kind: polygons, path: POLY, remap: {water: 9}}", "label 9 is not one of task.classes"),
])
def test_new_observation_fields_are_refused_naming_the_file(files, scene, observations, says):
    polygons = files.write(_polygons(_feature()), ".geojson")
    text = observations.replace("OBS", str(scene.observations)).replace("POLY", str(polygons))
    recipe = observation_recipe(files, scene, text)
    code, _, err = instarun("validate", recipe)
    named = str(scene.observations) if "OBS" in observations else str(polygons)
    assert code == 2 and says in err and named in err and "Traceback" not in err, err


def test_a_label_raster_remap_to_no_class_is_refused(files, scene):
    raster = _first_asset(scene)
    recipe = observation_recipe(files, scene, f"{{kind: raster, paths: [{raster}], date: 2023-01-19, remap: {{1: snow}}}}")
    code, _, err = instarun("validate", recipe)
    assert code == 2 and "data.observations.remap.1: label 'snow' is not one of task.classes" in err, err


def test_a_scale_for_a_band_the_preset_lacks_is_refused(files, scene):
    recipe = observation_recipe(files, scene, f"{{kind: points, path: {scene.observations}}}")
    text = recipe.read_text().replace(f"path: {scene.catalog}}}", f"path: {scene.catalog}, scale: {{nri: 0.0001}}}}")
    code, _, err = run_until(files, files.write(text), "search")
    assert code == 2 and "data.source.scale: band 'nri' is not valid for preset 'hls'" in err, err


# --- rasters ------------------------------------------------------------------------------------


def _write_raster(path: Path, kind: str, like: Path) -> None:
    """A bad raster of ``kind`` shaped like the good raster ``like``."""
    import rasterio

    if kind == "empty":
        path.write_bytes(b"")
        return
    if kind == "text":
        path.write_text("this is not a GeoTIFF\n")
        return
    if kind == "truncated":
        path.write_bytes(like.read_bytes()[:600])
        return
    with rasterio.open(like) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="float32", nodata=None)
    data = data.astype(np.float32)
    if kind == "all NaN":
        data[:] = np.nan
    elif kind == "no CRS":
        profile["crs"] = None
    elif kind == "wrong CRS":  # metres read as degrees: a footprint far outside the world
        profile["crs"] = "EPSG:4326"
    for option in ("blockxsize", "blockysize", "tiled"):
        profile.pop(option, None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


RASTER_KINDS = ["empty", "text", "truncated", "all NaN", "no CRS", "wrong CRS"]


def _first_asset(scene) -> Path:
    return sorted(scene.catalog.parent.rglob("B04.tif"))[0]


@pytest.mark.parametrize("kind", RASTER_KINDS)
def test_bad_label_rasters_are_refused_or_skipped_with_a_reason(files, scene, kind):
    bad = files.path(".tif")
    _write_raster(bad, kind, _first_asset(scene))
    recipe = observation_recipe(files, scene, f"{{kind: raster, paths: [{bad}], date: 2023-01-19}}")
    code, _, err = run_until(files, recipe, "chips")
    # refused by the search stage, or (readable header, unreadable or unlabelled pixels) every
    # chip skipped with its reason: the file named for unreadable ones
    last = err.splitlines()[-1] if err.strip() else ""
    skipped = code == 2 and "Traceback" not in err and last.startswith("error: no chip could be built")
    ok = rejected(code, err, bad, last_line_only=True) or (skipped and (
        "no_labels" in last if kind == "all NaN" else "unreadable" in last and bad.name in err))
    check("rasters: label rasters", ok, f"{kind}: exit {code}\n{err}")


@pytest.mark.parametrize("kind", RASTER_KINDS)
def test_bad_catalogue_assets_skip_their_chips_with_a_reason(files, kind, tmp_path):
    from instageo.data import demo

    scene = demo.generate(tmp_path / "scene", seed=1, size=64, acquisitions=2, points=6)
    for asset in scene.catalog.parent.rglob("B04.tif"):  # the red band of every item goes bad
        like = tmp_path / "like.tif"
        asset.rename(like)
        _write_raster(asset, kind, like)
    recipe = observation_recipe(files, scene, f"{{kind: points, path: {scene.observations}}}")
    # a runs folder of its own: cache keys hash the catalogue, not the assets it points at
    code, _, err = instarun("run", recipe, "--runs-dir", tmp_path / "runs", "--until", "chips")
    last = err.splitlines()[-1] if err.strip() else ""
    ok = "Traceback" not in err and code == 2 and last.startswith("error: no chip could be built") and (
        "unreadable" in last or "no_data" in last)
    check("rasters: catalogue assets", ok, f"{kind}: exit {code}\n{err}")


@pytest.mark.parametrize("override", ["data.chips.size=abc", "student.depth=true", "task.classes=[a, a]",
                                      "data.chips.nope=3", "data.chips.crs=foo", "export.predict.date=9999-12-31"])
def test_a_bad_set_value_is_blamed_on_the_set_option_not_a_recipe_line(override):
    """Were reported at a line of the recipe file, which holds no such value."""
    code, _, err = instarun("validate", REPO / "recipes" / "tiny.yaml", "--set", override)
    field = override.split("=")[0]
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and f"--set {field}: " in lines[0], err
    assert "tiny.yaml:" not in err, err
