"""The search stage over many observations: 10k, 30k and 100k points on a local catalogue of
Sentinel-2-shaped tiles (110 km squares on the UTM grid, a year of acquisitions every 5 days),
the whole stage as `instarun --until search` runs it (read the points, group, query, match
each observation to its items, write the lock). Linear means the seconds per 10k
observations stay flat; the target is 100k in under 5 s.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402

COUNTS = (10_000, 30_000, 100_000)
REGION = (30.0, -4.0, 36.0, 2.0)  # lon/lat: six UTM degrees of East Africa
DAYS, EVERY = 365, 5


def write_catalogue(folder: Path) -> Path:
    """A static catalogue of 110 km tiles (footprints as the MGRS grid draws them: squares
    in UTM, slanted in lon/lat) with one acquisition per tile every ``EVERY`` days."""
    from pyproj import Transformer

    folder.mkdir(parents=True)
    links = []
    start = dt.date(2024, 1, 1)
    west, south, east, north = REGION
    to_lonlat = Transformer.from_crs("EPSG:32736", "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32736", always_xy=True)
    x0, y0 = to_utm.transform(west, south)
    x1, y1 = to_utm.transform(east, north)
    tiles = []
    for x in range(int(x0) // 100_000 * 100_000, int(x1) + 1, 100_000):
        for y in range(int(y0) // 100_000 * 100_000, int(y1) + 1, 100_000):
            ring = [to_lonlat.transform(px, py) for px, py in
                    ((x, y), (x + 109_800, y), (x + 109_800, y + 109_800), (x, y + 109_800), (x, y))]
            tiles.append((f"T{x // 1000}_{y // 1000}", [list(p) for p in ring]))
    for name, ring in tiles:
        for day in range(0, DAYS, EVERY):
            date = start + dt.timedelta(days=day)
            item_id = f"S2.{name}.{date:%Y%m%d}"
            lons, lats = [p[0] for p in ring], [p[1] for p in ring]
            item = {
                "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "bbox": [min(lons), min(lats), max(lons), max(lats)],
                "properties": {"datetime": f"{date}T08:00:00Z", "eo:cloud_cover": 10.0, "proj:epsg": 32736},
                "assets": {band: {"href": f"https://example.invalid/{item_id}/{band}.tif", "type": "image/tiff"}
                           for band in ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")},
                "links": [], "stac_extensions": [],
            }
            (folder / f"{item_id}.json").write_text(json.dumps(item))
            links.append({"rel": "item", "href": f"./{item_id}.json", "type": "application/geo+json"})
    catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "bench", "description": "search bench",
               "links": links}
    (folder / "catalog.json").write_text(json.dumps(catalog))
    return folder / "catalog.json"


def write_points(path: Path, count: int) -> None:
    generator = random.Random(count)
    west, south, east, north = REGION
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "y", "date", "label"])
        for _ in range(count):
            date = dt.date(2024, 3, 1) + dt.timedelta(days=generator.randrange(270))
            writer.writerow([f"{generator.uniform(west, east):.6f}", f"{generator.uniform(south, north):.6f}",
                             date.isoformat(), generator.randrange(2)])


def time_search(folder: Path, catalog: Path, count: int) -> tuple[float, int, int]:
    """Seconds of the search stage (as its manifest records them), items and lock bytes."""
    from instageo.pipeline import default_pipeline
    from instageo.recipe import load_recipe
    from instageo.runner import run_recipe

    points = folder / f"points-{count}.csv"
    write_points(points, count)
    recipe_path = folder / f"search{count}.yaml"
    recipe_path.write_text(
        f"name: search{count}\ndata:\n  source: {{kind: catalog, path: {catalog}, preset: pc-sentinel-2-l2a}}\n"
        f"  observations: {{kind: points, path: {points}}}\n"
        "  chips: {size: 32, resolution: 10, bands: [blue, green, red, nir, swir16, swir22],"
        " time: {steps: 3, step_days: 30, tolerance_days: 10}}\n"
        "task: {classes: [other, crop]}\n")
    started = time.perf_counter()
    report = run_recipe(load_recipe(recipe_path), default_pipeline(), folder / "runs", until="search")
    seconds = time.perf_counter() - started
    summary = report["dataset"]["search"]
    lock = folder / f"search{count}.lock.json"
    return seconds, summary["items"], lock.stat().st_size


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        catalog = write_catalogue(folder / "catalogue")
        rows = [(count, *time_search(folder, catalog, count)) for count in COUNTS]
    items = len(list(range(0, DAYS, EVERY)))
    lines = [
        f"Machine: {machine()}. A local catalogue of Sentinel-2-shaped tiles over {REGION} "
        f"({items} acquisitions per tile); random points over 270 days; the whole search stage "
        "(read, group, query, match, lock) in this process.",
        "",
        "| observations | seconds | seconds per 10k | items used | lock file |",
        "|---|---|---|---|---|",
    ]
    for count, seconds, used, lock_bytes in rows:
        lines.append(f"| {count:,} | {seconds:.2f} | {seconds / count * 10_000:.2f} | {used:,} | "
                     f"{lock_bytes / 2**20:.1f} MiB |")
    (n0, t0, *_), (n1, t1, *_), (n2, t2, *_) = rows
    early, late = (t1 - t0) / (n1 - n0) * 10_000, (t2 - t1) / (n2 - n1) * 10_000
    lines += ["", f"Each further 10k observations costs {early:.2f} s from {n0:,} to {n1:,} and {late:.2f} s "
              f"from {n1:,} to {n2:,} (**{late / early:.2f}x**; 1 is linear, above 1 worse than linear); the "
              f"rest is fixed (reading the catalogue, writing the lock). {n2:,} in **{t2:.1f} s** "
              "(target under 5 s)."]
    print("\n".join(lines))
    write_section("Search over many observations (bench/search.py)", "\n".join(lines))


if __name__ == "__main__":
    main()
