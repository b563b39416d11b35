"""compare.html, the run's students side by side: their viewer stages' static maps with a
slider between two of them (the viewer stage's report hook writes it beside report.json)."""

from __future__ import annotations

import html
import json
from pathlib import Path


COMPARE_PAGE = "compare.html"


def compare_into_report(report: dict, run_dir: Path) -> dict:
    """The viewer stage's report hook: compare.html beside report.json, when it is written."""
    return {"compare": COMPARE_PAGE} if write_compare_page(report, run_dir, COMPARE_PAGE) else {}


def write_compare_page(report: dict, run_dir: Path, name: str = COMPARE_PAGE) -> bool:
    """<run>/compare.html: every student's static map side by side with a slider (the left
    and right maps chosen from lists), from their viewer stages' own tiles by relative paths,
    so it opens from disk with no network. Written when at least two students have a viewer."""
    maps = []
    for variant in report.get("variants", []):
        if not variant.get("viewer"):
            continue
        folder = Path(variant["viewer"]).parent
        zooms = sorted(int(z.name) for z in (run_dir / folder / "tiles" / "prediction").glob("*") if z.name.isdigit())
        boxes = [a["bbox"] for a in ([variant["prediction_area"]] if "prediction_area" in variant
                                       else variant.get("areas", [])) if a.get("bbox")]
        if not boxes:
            continue
        west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)  # several areas: their union
        east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
        metric = (variant.get("metrics") or {}).get("miou")
        maps.append({"name": f"student depth {variant['student_depth']} ({variant['name']})"
                             + (f", test mIoU {metric:.3f}" if metric is not None else ""),
                     "tiles": f"{folder.as_posix()}/tiles/prediction", "bounds": [[south, west], [north, east]],
                     "minZoom": zooms[0] if zooms else 0, "maxZoom": zooms[-1] if zooms else 0})
    if len(maps) < 2:
        (run_dir / name).unlink(missing_ok=True)
        return False
    leaflet = f"{Path(report['variants'][0]['viewer']).parent.as_posix()}/leaflet"
    page = COMPARE.format(leaflet=leaflet, config=json.dumps({"maps": maps}), title=html.escape(report["recipe"]))
    from instageo.files import write_bytes_atomic

    write_bytes_atomic(run_dir / name, page.encode("utf-8"))
    return True


COMPARE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}: students side by side</title>
<link rel="stylesheet" href="{leaflet}/leaflet.css">
<script src="{leaflet}/leaflet.js"></script>
<style>
  html, body {{ margin: 0; height: 100%; font: 13px/1.4 sans-serif; }}
  #map {{ position: absolute; inset: 40px 0 0 0; background: #222; }}
  #bar {{ position: absolute; inset: 0 0 auto 0; height: 40px; display: flex; gap: 12px; align-items: center; padding: 0 8px; }}
  #slider {{ flex: 1; }}
</style>
</head>
<body>
<div id="bar">
  <label>Left <select id="left"></select></label>
  <input id="slider" type="range" min="0" max="1" step="0.001" value="0.5" aria-label="compare">
  <label>Right <select id="right"></select></label>
</div>
<div id="map"></div>
<script>
const config = {config};
const map = L.map("map", {{ fadeAnimation: false }});
map.createPane("right").style.zIndex = 450;
map.fitBounds(config.maps[0].bounds);
L.control.scale({{ imperial: false }}).addTo(map);
for (const id of ["left", "right"]) {{
  config.maps.forEach((m, i) => document.getElementById(id).add(new Option(m.name, i)));
}}
document.getElementById("right").value = 1;
let layers = [];
function draw() {{
  layers.forEach((l) => map.removeLayer(l));
  layers = ["left", "right"].map((side) => {{
    const m = config.maps[Number(document.getElementById(side).value)];
    return L.tileLayer(m.tiles + "/{{z}}/{{x}}/{{y}}.png", {{ minZoom: m.minZoom, maxNativeZoom: m.maxZoom,
      maxZoom: m.maxZoom + 2, bounds: m.bounds, pane: side === "right" ? "right" : "overlayPane" }}).addTo(map);
  }});
  clip();
}}
function clip() {{  // the right map shows only right of the slider
  const size = map.getSize(), nw = map.containerPointToLayerPoint([0, 0]), se = map.containerPointToLayerPoint(size);
  const x = map.containerPointToLayerPoint([Number(document.getElementById("slider").value) * size.x, 0]).x;
  map.getPane("right").style.clip = `rect(${{nw.y}}px, ${{se.x}}px, ${{se.y}}px, ${{x}}px)`;
}}
document.getElementById("left").addEventListener("change", draw);
document.getElementById("right").addEventListener("change", draw);
document.getElementById("slider").addEventListener("input", clip);
map.on("move zoom resize", clip);
draw();
</script>
</body>
</html>
"""
