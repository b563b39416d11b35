"""`make bench`: run every benchmark; each writes its section of bench/RESULTS.md.

`python -m bench chips models` runs only the named ones."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from bench import (chips, distributed, estimate, gpu, heldout, hostile, models, precision, predict, predict_ab,
                   profile_predict, rerun, search, stability, stitching)


def at_demo_shapes(bench) -> SimpleNamespace:
    """A bench again at the demo's shapes, in its own process (the shapes are read at import)."""
    return SimpleNamespace(main=lambda: subprocess.run(
        [sys.executable, str(Path(bench.__file__))], env={**os.environ, "BENCH_SHAPES": "demo"}, check=True))


BENCHMARKS = {"chips": chips, "models": models, "predict": predict, "predict_demo": at_demo_shapes(predict),
              "predict_ab": predict_ab, "predict_ab_demo": at_demo_shapes(predict_ab),
              "profile_predict": profile_predict, "profile_predict_demo": at_demo_shapes(profile_predict),
              "rerun": rerun, "search": search, "heldout": heldout, "stability": stability, "precision": precision,
              "stitching": stitching, "estimate": estimate, "gpu": gpu, "distributed": distributed, "hostile": hostile}

for name in sys.argv[1:] or BENCHMARKS:
    print(f"== bench/{name}.py", flush=True)
    BENCHMARKS[name].main()
