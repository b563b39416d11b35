"""Chip building over COGs served on 127.0.0.1: instageo's chips stage vs a naive reader.

The naive baseline is what a first script does: for each chip, open every band (and the
mask) of every chosen acquisition one after another, read the chip window, close. instageo
builds the same chips with many reads in flight, files kept open, GDAL tuned for remote
COGs, and the mask read first (so rejected acquisitions cost one small read). Both read
through the same Range-honouring loopback server, which counts the bytes it sends.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402
from tests.servers import RangeFileServer  # noqa: E402

SCENE_SIZE, ACQUISITIONS, POINTS = 1536, 6, 100
LATENCIES = tuple(float(v) for v in __import__("os").environ.get("BENCH_LATENCIES", "0,0.02,0.05").split(","))
WORKERS = int(__import__("os").environ.get("BENCH_WORKERS", "8"))
CHIP, STEPS = 224, 2


def serve_scene_over_http(scene_root: Path, url: str) -> None:
    """Point every asset href of the demo catalogue at the loopback server."""
    for item_path in scene_root.glob("hls-demo/*/*.json"):
        item = json.loads(item_path.read_text())
        for asset in item["assets"].values():
            relative = (item_path.parent / asset["href"]).resolve().relative_to(scene_root)
            asset["href"] = f"{url}/{relative}"
        item_path.write_text(json.dumps(item))


def naive(index: Path, search: Path, threads: int = 1) -> int:
    """Read the same chips the simple way (on ``threads`` threads, as a user with a thread pool
    would: one chip a task); returns the number of chips."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from instageo.data.grid import centred_grid

    items = json.loads((search / "items.json").read_text())
    with open(index, newline="") as handle:
        rows = list(csv.DictReader(handle))

    def read_chip(row: dict) -> None:
        grid = centred_grid(float(row["lon"]), float(row["lat"]), CHIP, 30.0, "utm")
        for item_id in row["items"].split(";"):
            item = items[item_id]
            for asset in [*item["bands"].values(), item["mask"]]:
                with rasterio.open(asset["href"]) as src, WarpedVRT(
                    src, crs=grid.crs, transform=grid.affine, width=CHIP, height=CHIP,
                    resampling=Resampling.nearest,
                ) as vrt:
                    vrt.read(1)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read_chip, rows))
    return len(rows)


def main() -> None:
    from instageo.cli import main as instarun
    from instageo.data import demo

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        scene = demo.generate(folder / "scene", seed=11, size=SCENE_SIZE, acquisitions=ACQUISITIONS, points=POINTS)
        print(f"scene {SCENE_SIZE}x{SCENE_SIZE}, {ACQUISITIONS} dates: {time.perf_counter() - started:.1f}s")
        with RangeFileServer(folder / "scene") as server:
            serve_scene_over_http(folder / "scene", server.url)
            (folder / "bench.yaml").write_text(
                f"name: bench\ndata:\n  source: {{kind: catalog, path: scene/catalog.json}}\n"
                f"  observations: {{kind: points, path: scene/observations.csv}}\n"
                f"  chips: {{size: {CHIP}, time: {{steps: {STEPS}, step_days: 30, tolerance_days: 16}},"
                f" mask: {{max_fraction: 0.5}}}}\n"
                f"  executor: {{kind: local, workers: {WORKERS}}}\n"
                f"task: {{classes: [other, water, vegetation]}}\n")
            runs = ["--runs-dir", str(folder / "runs")]
            assert instarun([str(folder / "bench.yaml"), *runs, "--until", "search"]) == 0
            rows = []
            # each measurement in a fresh process, so no GDAL cache carries over between them
            instarun_bin = str(Path(sys.executable).parent / "instarun")
            for latency in LATENCIES:
                server.reset(latency)
                started = time.perf_counter()
                subprocess.run([instarun_bin, str(folder / "bench.yaml"), *runs, "--until", "chips",
                                "--force", "chips"], check=True, capture_output=True)
                ours_seconds, ours = time.perf_counter() - started, server.stats()
                stages = folder / "runs" / "bench" / "stages"
                stage, search = next(stages.glob("chips-*")), next(stages.glob("search-*"))
                server.reset(latency)
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "bench.chips", "naive", str(stage / "index.csv"),
                                str(search)], check=True, cwd=REPO)
                naive_seconds, baseline = time.perf_counter() - started, server.stats()
                server.reset(latency)
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "bench.chips", "naive", str(stage / "index.csv"),
                                str(search), str(WORKERS)], check=True, cwd=REPO)
                threaded_seconds, threaded = time.perf_counter() - started, server.stats()
                chips = len((stage / "index.csv").read_text().splitlines()) - 1
                rows.append((latency, chips, ours_seconds, ours, naive_seconds, baseline, threaded_seconds, threaded))
    chips = rows[0][1]
    # the chip's own pixels, as stored in the COGs: 6 int16 bands + a uint8 mask per step
    own = chips * STEPS * CHIP * CHIP * (6 * 2 + 1)
    lines = [
        f"Machine: {machine()}. Scene {SCENE_SIZE}x{SCENE_SIZE} px, {ACQUISITIONS} dates, COG blocks 256,"
        f" {chips} chips of {CHIP}x{CHIP} px x {STEPS} steps, served by a Range-honouring server on"
        " 127.0.0.1 that can add a delay before each answer (a remote store's time to first byte).",
        "",
        "| latency | reader | chips/s | requests | bytes fetched / chip's own bytes | speed-up vs naive threaded |",
        "|---|---|---|---|---|---|",
    ]
    for latency, chips, ours_seconds, ours, naive_seconds, baseline, threaded_seconds, threaded in rows:
        ms = f"{latency * 1000:.0f} ms"
        lines += [
            f"| {ms} | instageo chips stage ({WORKERS} threads) | {chips / ours_seconds:.1f} | {ours['requests']} |"
            f" {ours['bytes_sent'] / own:.2f} | **{threaded_seconds / ours_seconds:.1f}x** |",
            f"| {ms} | naive on {WORKERS} threads: a thread pool over the chips, each band opened, read, closed |"
            f" {chips / threaded_seconds:.1f} | {threaded['requests']} | {threaded['bytes_sent'] / own:.2f} | 1.0x |",
            f"| {ms} | naive on one thread | {chips / naive_seconds:.1f} | {baseline['requests']} |"
            f" {baseline['bytes_sent'] / own:.2f} | {threaded_seconds / naive_seconds:.2f}x |",
        ]
    lines += [
        "",
        "Both timings include starting a Python process (~1 s for instarun with its imports).",
        "instageo's time includes choosing each step's acquisition by the chip's own cloud cover"
        " (masks of rejected dates are read too), writing the GeoTIFFs, the index, statistics and"
        " a quicklook; the naive reader is handed the chosen dates and writes nothing.",
    ]
    print("\n".join(lines))
    write_section("Chips over HTTP (bench/chips.py)", "\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["naive"]:
        naive(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    else:
        main()
