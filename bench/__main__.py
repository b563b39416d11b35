"""`make bench`: run every benchmark; each writes its section of bench/RESULTS.md.

`python -m bench chips models` runs only the named ones."""

import sys

from bench import (chips, distributed, estimate, gpu, heldout, hostile, models, precision, predict, profile_predict,
                   rerun, search, stability, stitching)

BENCHMARKS = {"chips": chips, "models": models, "predict": predict, "profile_predict": profile_predict, "rerun": rerun, "search": search,
              "heldout": heldout, "stability": stability, "precision": precision, "stitching": stitching,
              "estimate": estimate, "gpu": gpu, "distributed": distributed,
              "hostile": hostile}

for name in sys.argv[1:] or BENCHMARKS:
    print(f"== bench/{name}.py", flush=True)
    BENCHMARKS[name].main()
