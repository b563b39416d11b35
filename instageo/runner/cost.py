"""What mapping would cost, from the predict stage's own end-to-end timing.

ThroughputBench (the GeoSpatial ML blog) prices a model by what mapping the Earth's land on
every acquisition would cost; no peer tells its users that before they choose a student.
Here each variant's measured pixels per second end to end (reading, model, blending, COGs:
the predict stage's wall time over its area) becomes CPU-hours on this machine (wall hours x
its cores) for the recipe's area, for the Earth's land once, and per year at a revisit.
Small areas overstate the cost: the session start and COG finishing weigh on them.
"""

from __future__ import annotations

from typing import Any

LAND_KM2 = 148.9e6  # the Earth's land surface, Antarctica and Greenland included
REVISITS_PER_YEAR = 73  # Sentinel-2 A and B together: every 5 days at the equator


def cost_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant with a timed prediction: area pixels, seconds, pixels/s and the CPU-hours."""
    rows = []
    for variant in report.get("variants", []):
        area = variant.get("prediction_area") or {}
        if not area.get("seconds") or not area.get("width"):
            continue
        pixels = area["width"] * area["height"]
        per_second = pixels / area["seconds"]
        cores = area.get("cores", 1)
        land_pixels = LAND_KM2 * 1e6 / area["resolution_m"] ** 2

        def cpu_hours(count: float) -> float:
            return count / per_second / 3600 * cores

        rows.append({"variant": variant["name"], "depth": variant.get("student_depth"), "model": area.get("model"),
                     "pixels": pixels, "seconds": area["seconds"], "pixels_per_s": per_second, "cores": cores,
                     "resolution_m": area["resolution_m"], "area_cpu_hours": cpu_hours(pixels),
                     "land_cpu_hours": cpu_hours(land_pixels),
                     "land_per_year_cpu_hours": cpu_hours(land_pixels) * REVISITS_PER_YEAR})
    return rows


def cost_markdown(report: dict[str, Any]) -> list[str]:
    rows = cost_rows(report)
    if not rows:
        return []
    lines = ["", "## What mapping would cost", "",
             f"Measured end to end by the predict stage on this machine ({rows[0]['cores']} cores): CPU-hours = wall "
             f"hours x cores. The Earth's land: {LAND_KM2 / 1e6:.1f} M km² at the chips' resolution; a year: "
             f"{REVISITS_PER_YEAR} passes (Sentinel-2's 5-day revisit). Small areas overstate it (fixed costs).", "",
             "| variant | depth | model | area (px) | seconds | pixels/s | CPU-hours, this area | CPU-hours, Earth's "
             "land once | CPU-hours, land per year |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['depth']} | {r['model']} | {r['pixels']:,} | {r['seconds']:.2f} | "
                     f"{r['pixels_per_s']:,.0f} | {r['area_cpu_hours']:.4f} | {r['land_cpu_hours']:,.0f} | "
                     f"{r['land_per_year_cpu_hours']:,.0f} |")
    return lines
