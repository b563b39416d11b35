"""What mapping would cost, from the predict stage's own end-to-end timing.

ThroughputBench (the GeoSpatial ML blog) prices a model by what mapping the Earth's land on
every acquisition would cost; no peer tells its users that before they choose a student.
Here each variant's measured pixels per second end to end (reading, model, blending, COGs:
the predict stage's wall time over its area) becomes CPU-hours on this machine (wall hours x
its cores), or GPU-hours where it predicted on a GPU (wall hours x 1 GPU), for the recipe's
area, for the Earth's land once, and per year at Sentinel-2's and HLS's revisits.
Small areas overstate the cost: the session start and COG finishing weigh on them.
"""

from __future__ import annotations

from typing import Any

LAND_KM2 = 148.9e6  # the Earth's land surface, Antarctica and Greenland included
REVISITS = {"Sentinel-2": 73,  # A and B together: every 5 days at the equator
            "HLS": 122}  # Landsat 8/9 + Sentinel-2 A/B harmonised: every 2-3 days (NASA); 3 taken


def cost_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant with a timed prediction: area pixels, seconds, pixels/s and the CPU-hours."""
    rows = []
    for variant in report.get("variants", []):
        area = variant.get("prediction_area") or {}
        if not area.get("seconds") or not area.get("width"):
            continue
        pixels = area["width"] * area["height"]
        per_second = pixels / area["seconds"]
        gpu = area.get("device") == "gpu"
        cores = area.get("cores", 1)
        land_pixels = LAND_KM2 * 1e6 / area["resolution_m"] ** 2

        def hours(count: float) -> float:  # CPU-hours (x cores), or GPU-hours (one GPU)
            return count / per_second / 3600 * (1 if gpu else cores)

        rows.append({"variant": variant["name"], "depth": variant.get("student_depth"), "model": area.get("model"),
                     "pixels": pixels, "seconds": area["seconds"], "pixels_per_s": per_second, "cores": cores,
                     "unit": "GPU-hours" if gpu else "CPU-hours", "resolution_m": area["resolution_m"],
                     "area_hours": hours(pixels), "land_hours": hours(land_pixels),
                     **{f"land_per_year_hours_{name}": hours(land_pixels) * passes
                        for name, passes in REVISITS.items()}})
    return rows


def cost_markdown(report: dict[str, Any]) -> list[str]:
    rows = cost_rows(report)
    if not rows:
        return []
    passes = ", ".join(f"{n} {p} passes" for n, p in REVISITS.items())
    lines = ["", "## What mapping would cost", "",
             f"Measured end to end by the predict stage on this machine ({rows[0]['cores']} cores): CPU-hours = wall "
             f"hours x cores; GPU-hours (where it predicted on a GPU) = wall hours x 1 GPU. The Earth's land: "
             f"{LAND_KM2 / 1e6:.1f} M km² at the chips' resolution; a year: {passes} (5-day and 3-day revisits). "
             "Small areas overstate it (fixed costs).", "",
             "| variant | depth | model | area (px) | seconds | pixels/s | unit | this area | Earth's land once | "
             "land per year, Sentinel-2 | land per year, HLS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['depth']} | {r['model']} | {r['pixels']:,} | {r['seconds']:.2f} | "
                     f"{r['pixels_per_s']:,.0f} | {r['unit']} | {r['area_hours']:.4f} | {r['land_hours']:,.0f} | "
                     f"{r['land_per_year_hours_Sentinel-2']:,.0f} | {r['land_per_year_hours_HLS']:,.0f} |")
    return lines
