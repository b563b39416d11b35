"""The demo cold vs a no-op cached rerun, and `instarun --help` start-up, each a subprocess
as a user would run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402

INSTARUN = str(Path(sys.executable).parent / "instarun")
HELP_ROUNDS = 7


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(REPO / "recipes" / "demo.yaml", folder / "demo.yaml")
        run = [INSTARUN, "demo.yaml", "--runs-dir", "runs"]
        cold = timed(run, folder)
        reruns = [timed(run, folder) for _ in range(3)]
    # in alternation, so a busy moment of the machine falls on all three alike
    python, libraries, helps = [], [], []
    for _ in range(HELP_ROUNDS):
        python.append(timed([sys.executable, "-c", "pass"], REPO))
        libraries.append(timed([sys.executable, "-c", "import yaml, pydantic"], REPO))
        helps.append(timed([INSTARUN, "--help"], REPO))
    rerun, help_s, python_s, libraries_s = median(reruns), median(helps), median(python), median(libraries)
    lines = [
        f"Machine: {machine()}. recipes/demo.yaml (3 students) in a fresh runs folder; each command a new process.",
        "",
        "| command | seconds | ratio |",
        "|---|---|---|",
        f"| `instarun demo.yaml`, cold (data -> viewer) | {cold:.1f} | 1 |",
        f"| `instarun demo.yaml` again, everything cached (median of 3) | {rerun:.2f} | **{cold / rerun:.0f}x faster** |",
        f"| `instarun --help` (median of {HELP_ROUNDS}) | {help_s:.2f} | **{help_s / libraries_s:.1f}x** a bare"
        f" `python -c \"import yaml, pydantic\"` ({libraries_s:.2f} s; target <= 3x), {help_s / python_s:.1f}x"
        f" `python -c pass` ({python_s:.2f} s) |",
    ]
    print("\n".join(lines))
    write_section("Cached rerun and start-up (bench/rerun.py)", "\n".join(lines))


if __name__ == "__main__":
    main()
