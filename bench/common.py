"""Shared helpers for the benchmarks: a machine description and the RESULTS.md writer."""

from __future__ import annotations

import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}, {platform.system()}"


def write_section(title: str, body: str) -> None:
    """Replace (or append) the '## title' section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by `make bench`.\n"
    marker = f"## {title}\n"
    section = marker + body.rstrip() + "\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[end + 1:] if end != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)


def search_result(stage: Path):
    """The search stage's result from its folder (manifest.json), as the runner hands it on."""
    import json

    from instageo.runner.stage import StageResult

    manifest = json.loads((stage / "manifest.json").read_text())
    return StageResult("search", manifest["key"], stage, manifest["files"], manifest.get("summary", {}))


def tile_inputs(jobs: list, model_path: Path, bundle: dict, size: int, overlap: int) -> tuple:
    """Every readable tile's model inputs (chips, temporal, location), stacked, exactly as the
    engine prepares them (TileHead.prepare: the product's normalisation), for timing the
    model alone on the computation the product runs."""
    import numpy as np

    from instageo.data.chip_build import read_stack, reader_for
    from instageo.engine.heads import TileHead

    model = TileHead(model_path, bundle, size, overlap)
    prepared = [model.prepare(job, read_stack(job, reader_for(job))) for job in jobs]
    prepared = [tile for tile in prepared if tile is not None]
    return tuple(np.stack([tile[i] for tile in prepared]) for i in (1, 2, 3))
