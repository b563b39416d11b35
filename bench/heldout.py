"""Sen1Floods11 held-out scenes over seeds: the teacher and its student against a global Otsu
threshold on VV, on real chips of two countries training never sees (tests/sen1floods11.py
is the experiment; the suite asserts the teacher wins in every seed, this records the
figures)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, write_section

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SEEDS = [int(s) for s in os.environ.get("BENCH_SEEDS", "0,1,2,3,4").split(",")]


def main() -> None:
    from tests.sen1floods11 import HELD_OUT, summary_line, held_out_run

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = held_out_run(Path(tmp), SEEDS)
    line = summary_line(result)
    print(line)
    body = [
        f"Machine: {machine()}. Test: every chip of {', '.join(HELD_OUT)} (`split.test.files`); val: spatial "
        "blocks of 1 km of the other scenes (gap 0.2 km); instageo_ci teacher from scratch (8 epochs, val-smoothed "
        "early stopping), student depth 2; Otsu threshold on VV fitted on the train chips. "
        f"{time.perf_counter() - started:.0f} s.",
        "",
        "| seed | Otsu (VV) | teacher | student |",
        "|---|---|---|---|",
        *(f"| {s} | {result['otsu']:.3f} | {t:.3f} | {st:.3f} |"
          for s, t, st in zip(result["seeds"], result["teacher"], result["student"])),
        "",
        line + ".",
    ]
    write_section("Sen1Floods11 held-out scenes over seeds (bench/heldout.py)", "\n".join(body))
