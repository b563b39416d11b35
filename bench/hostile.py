"""The map app under generated hostile requests: tests/functional/test_hostile.py run with
2,000 hypothesis examples per surface (`make test` runs a few hundred), the counts of
requests and answers by status written to RESULTS.md. The assertions are the test's: no
500, every 200 from /files a servable file, no folder left by a refused or cancelled job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402

EXAMPLES = 2000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        counts_file = Path(tmp) / "counts.json"
        env = {**os.environ, "INSTAGEO_HOSTILE_EXAMPLES": str(EXAMPLES), "INSTAGEO_HOSTILE_COUNTS": str(counts_file)}
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "tests/functional/test_hostile.py"], cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    outcome = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "no pytest output"
    rows = "\n".join(f"| {key} | {value:,} |" for key, value in sorted(counts.items()))
    body = (f"Machine: {machine()}. `python -m bench hostile`: tests/functional/test_hostile.py with "
            f"{EXAMPLES:,} hypothesis examples per test over raw HTTP to `instarun serve` of a finished tiny.yaml run "
            f"(--max-tiles 30), in {seconds:.0f} s. pytest: {outcome}.\n\n"
            "| surface: what | count |\n|---|---:|\n" + rows + "\n\n"
            "Every status is a deliberate answer (no 500, no dropped connection); each 4xx body is "
            "`{\"error\", \"field\"}` on one line; each 200 body from /files hashes to a file the allow-list "
            "serves; after every accepted job was cancelled and ended, `app/` held only finished jobs' folders "
            "and the demo source.\n")
    write_section("Hostile requests to the map app (hypothesis)", body)
    print(body)
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-2000:], sep="\n")
        raise SystemExit(f"bench/hostile.py: the hostile tests failed ({outcome})")


if __name__ == "__main__":
    main()
