"""`instarun --help`, `validate`, `plan` and `schema` import only what they use: none of the
heavy libraries that only stages need. The reference is Python's own record of every module
a process imports (`python -X importtime`), not a list kept by us."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = {"torch", "onnxruntime", "onnx", "rasterio", "timm", "matplotlib", "dask", "distributed", "scipy",
         "pystac_client", "rich"}


def imported_modules(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "instageo", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "instageo.cli" in names  # the record is there: the check below can fail
    return names


@pytest.mark.parametrize("args", [["--help"], ["predict", "--help"], ["validate", "recipes/demo.yaml"],
                                  ["plan", "recipes/demo.yaml"], ["schema"]], ids=" ".join)
def test_commands_that_run_no_stage_import_no_heavy_library(args):
    heavy = {name for name in imported_modules(*args) if name.split(".")[0] in HEAVY}
    assert not heavy, sorted(heavy)
