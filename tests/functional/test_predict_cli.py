"""`instarun predict` under a careless user: every mistake is one line and exit 2, found
before any work, and nothing is written. Each case here once ran into a traceback (KeyError,
InvalidProtobuf, FileExistsError, FileNotFoundError) or, worse, exited 0: a bundle edited to
one band wrote a wrong map, and a mistyped sub-folder predicted with its parent's bundle."""

import json
import shutil

import pytest

from instageo.cli import main
from instageo.deploy.guards import serving_line
from tests.conftest import run_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny recipe's bundle, and the area and date its predict stage used."""
    run_dir, report = run_tiny(tmp_path_factory.mktemp("tiny"), "--until", "predict")
    variant = report["variants"][0]
    return (run_dir / variant["onnx"]).parent, variant["prediction_area"]


def predict(capsys, bundle, area, out, **changes) -> tuple[int, str]:
    options = {"--bbox": ",".join(map(repr, area["bbox"])), "--date": area["date"], "--out": str(out), **changes}
    code = main(["predict", str(bundle), *[v for kv in options.items() for v in kv]])
    return code, capsys.readouterr().err


def refused(capsys, bundle, area, out, words: str, **changes) -> None:
    code, err = predict(capsys, bundle, area, out, **changes)
    assert code == 2 and words in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.is_dir() or not any(out.iterdir()), list(out.iterdir())  # nothing written


def edited(tiny, tmp_path, edit) -> object:
    """A copy of the bundle with bundle.json changed by ``edit``."""
    copy = shutil.copytree(tiny[0], tmp_path / "bundle")
    bundle = json.loads((copy / "bundle.json").read_text())
    edit(bundle)
    (copy / "bundle.json").write_text(json.dumps(bundle))
    return copy


def test_the_bundle_as_given_predicts(tiny, tmp_path, capsys):
    code, err = predict(capsys, tiny[0], tiny[1], tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "prediction.tif").is_file()
    # bundle.json itself names its folder
    code, err = predict(capsys, tiny[0] / "bundle.json", tiny[1], tmp_path / "again")
    assert code == 0, err


def test_a_bundle_is_named_by_the_folder_given_and_never_replaced_by_its_parent(tiny, tmp_path, capsys):
    bundle, area = tiny
    refused(capsys, bundle / "no-such-sub", area, tmp_path / "out", f"{bundle / 'no-such-sub'}: no such folder")
    refused(capsys, tmp_path / "missing", area, tmp_path / "out", f"{tmp_path / 'missing'}: no such folder")
    (tmp_path / "empty").mkdir()
    refused(capsys, tmp_path / "empty", area, tmp_path / "out", "no bundle.json in this folder")


@pytest.mark.parametrize("edit, words", [
    (lambda b: b.pop("classes"), "bundle.json: classes: missing"),
    (lambda b: b.update(bands="blue"), "bundle.json: bands: "),
    (lambda b: b.update(format="instageo-bundle/1"), "format 'instageo-bundle/1', not 'instageo-bundle/2'"),
    # one band: the normalisation still has six values
    (lambda b: b.update(bands=["blue"]), "normalization.mean has 6 value(s) for 1 band(s)"),
    # one band, consistently edited down to the normalisation: the declared input has six
    (lambda b: b.update(bands=["blue"], normalization={**b["normalization"], "mean": [0.1], "std": [0.1]}),
     "inputs.chips is ['batch', 6, 2, 16, 16], but bands, chip.steps and chip.size make ['batch', 1, 2, 16, 16]"),
    (lambda b: b["chip"].update(size=32), "but bands, chip.steps and chip.size make ['batch', 6, 2, 32, 32]"),
    (lambda b: b.update(colours=b["colours"][:1]), "colours has 1 colour(s) for 3 class(es)"),
    (lambda b: b.update(classes=["a", "b"], colours=["#000000", "#ffffff"]), "output is ['batch', 3, 16, 16] for 2"),
])
def test_a_bundle_whose_parts_disagree_is_refused_before_any_work(tiny, tmp_path, capsys, edit, words):
    refused(capsys, edited(tiny, tmp_path, edit), tiny[1], tmp_path / "out", words)


def test_a_bundle_edited_everywhere_but_its_model_is_refused_by_the_onnx_graph(tiny, tmp_path, capsys):
    """Every field of bundle.json says one band; model.onnx itself takes six."""
    def one_band(bundle):
        bundle.update(bands=["blue"], normalization={**bundle["normalization"], "mean": [0.1], "std": [0.1],
                                                     "source": {"blue": "chips"}})
        bundle["inputs"][0]["shape"][1] = 1
    refused(capsys, edited(tiny, tmp_path, one_band), tiny[1], tmp_path / "out",
            "model.onnx: input chips is ['batch', 6, 2, 16, 16], but bundle.json declares ['batch', 1, 2, 16, 16]")


def test_a_model_file_that_is_truncated_missing_or_renamed_is_one_line(tiny, tmp_path, capsys):
    copy = shutil.copytree(tiny[0], tmp_path / "bundle")
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    refused(capsys, copy, tiny[1], tmp_path / "out", "model.onnx: not a loadable ONNX model")
    (copy / "model.onnx").unlink()
    refused(capsys, copy, tiny[1], tmp_path / "out", "model.onnx: not a loadable ONNX model")
    renamed = edited(tiny, tmp_path / "renamed", lambda b: b["inputs"][0].update(name="images"))
    refused(capsys, renamed, tiny[1], tmp_path / "out", "takes inputs ['chips'], but bundle.json declares ['images']")


@pytest.mark.parametrize("out, words", [
    ("{file}", "a file is there; give a folder"),
    ("{file}/below", "is a file, not a folder"),
    ("/proc/instageo-out", "--out /proc/instageo-out: cannot write in /proc"),
    ("/sys/instageo-out", "--out /sys/instageo-out: cannot write in /sys"),
])
def test_an_out_folder_that_cannot_be_made_is_refused_up_front(tiny, tmp_path, capsys, out, words):
    (tmp_path / "file").write_text("mine")
    target = tmp_path / out.format(file="file") if "{file}" in out else tmp_path.joinpath(out)
    refused(capsys, tiny[0], tiny[1], target, words)
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("option, value, words", [
    ("--date", "20230628", "--date 20230628: not YYYY-MM-DD"),
    ("--date", "2023-W26-3", "not YYYY-MM-DD"),
    ("--date", "2023-02-30", "not YYYY-MM-DD (no such day)"),
    ("--bbox", "39.9,1.41,nan,1.45", "--bbox 39.9,1.41,nan,1.45: should be west,south,east,north"),
    ("--bbox", "-inf,1.41,39.9,1.45", "should be west,south,east,north"),
    ("--bbox", "-170,-80,170,80", "give a smaller --bbox"),
])
def test_dates_are_iso_and_boxes_finite_and_small_enough(tiny, tmp_path, capsys, option, value, words):
    refused(capsys, tiny[0], tiny[1], tmp_path / "out", words, **{option: value})


def test_catalog_build_dates_are_iso_too(tmp_path, capsys):
    (tmp_path / "scenes").mkdir()
    code = main(["catalog", "build", str(tmp_path / "scenes"), "--out", str(tmp_path / "cat"), "--datetime", "20230628"])
    err = capsys.readouterr().err
    assert code == 2 and "--datetime 20230628: not YYYY-MM-DD" in err, err


def test_the_printed_url_is_one_a_browser_can_open():
    assert serving_line("127.0.0.1", 8000, None) == "http://127.0.0.1:8000/"
    line = serving_line("0.0.0.0", 8000, "t" * 16)
    assert line.startswith(f"http://127.0.0.1:8000/?token={'t' * 16} ") and "all interfaces" in line
    assert serving_line("::", 9, None).startswith("http://127.0.0.1:9/")
