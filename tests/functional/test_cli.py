"""The CLI as users run it: the installed `instarun` script in a subprocess."""

import shutil
import subprocess
import sys
from pathlib import Path

from instageo.cli import main as instageo_main
from tests.conftest import REPO

INSTARUN = str(Path(sys.executable).parent / "instarun")


def instarun(*args, cwd=REPO):
    return subprocess.run([INSTARUN, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_validate_reports_every_problem_with_exit_2_and_no_traceback(write_recipe):
    path = write_recipe("""
        name: r
        data:
          source: {kind: demo}
          chips: {size: -1, time: {stepz: 2}}
        student: {depth: two}
        """)
    result = instarun("validate", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:4: data.chips.size: should be greater than or equal to 8, got -1",
        f"{path}:4: data.chips.time.stepz: unknown field 'stepz'; did you mean 'steps'?",
        f"{path}:5: student.depth: should be a valid integer, unable to parse string as an integer, got 'two'",
    ]
    assert "Traceback" not in result.stderr


def test_validate_ok_lists_variants():
    result = instarun("validate", "recipes/demo.yaml", "--set", "student.depth=1,2,3")
    assert result.returncode == 0
    assert result.stdout.strip() == (
        "recipes/demo.yaml: ok (demo, 3 variant(s): student.depth=1, student.depth=2, student.depth=3)"
    )


def test_schema_command_prints_the_committed_schema():
    result = instarun("schema")
    assert result.returncode == 0
    assert result.stdout == (REPO / "schemas" / "recipe.schema.json").read_text()


def test_help_and_validate_do_not_import_heavy_libraries():
    probe = (
        "import sys; from instageo.cli import main; "
        "main(['validate', 'recipes/tiny.yaml']); main(['--help']); "
        "heavy = [m for m in ('torch', 'rasterio', 'onnxruntime', 'timm') if m in sys.modules]; "
        "print('heavy:', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip().endswith("heavy: []")
    assert "Usage: instarun" in result.stdout


def test_a_cached_rerun_loads_neither_torch_nor_matplotlib(tmp_path):
    """Everything cached: the rerun checks manifests and rewrites the report, no more."""
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    run = [str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]
    assert instageo_main(run) == 0
    probe = (
        f"import sys; from instageo.cli import main; code = main({run!r}); "
        "heavy = [m for m in ('torch', 'onnxruntime', 'timm', 'matplotlib') if m in sys.modules]; "
        "print('exit', code, 'heavy:', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip().endswith("exit 0 heavy: []"), result.stdout + result.stderr
    assert "0 stage(s) run, 7 cached" in result.stderr + result.stdout


def test_unknown_option_is_a_usage_error():
    result = instarun("recipes/tiny.yaml", "--frobnicate")
    assert result.returncode == 2 and "No such option" in result.stderr
