"""The `viewer` stage: a static map of the input, the prediction and the confidence.

XYZ PNG tiles (rio-tiler, WebMercatorQuad) for the recipe's zoom range, and viewer/index.html
with Leaflet copied next to it from the XStatic-Leaflet wheel: layer toggles, opacity, a
legend, the area outline and the model's metrics, and a click that shows the class and
confidence at a point (from a lon/lat grid of both embedded in the page, at most
LOOKUP_SIZE pixels a side: a page opened from disk may not fetch files). With embeddings
(export.embeddings), a layer of their first three PCA components as colour, and a click marks
the NEIGHBOURS cells most like the clicked one by cosine, searched in the page over the int8
codes embedded in it. It opens from the file system with no network: every URL is relative.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from instageo.engine.bundle import read_bundle
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult

LAYERS = ("rgb", "prediction", "confidence")
LOOKUP_SIZE = 512
NEIGHBOURS = 10  # cells highlighted by a click on the embeddings
MAX_NEIGHBOUR_CELLS = 200_000  # embedded codes for the nearest-neighbour search, at most (64 B each)


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    from rio_tiler.io import Reader

    predict, export = inputs["predict"], inputs["export"]
    bundle = read_bundle(export.path("bundle").parent)
    folder = ctx.workdir / "viewer"
    zmin, zmax = recipe.export.viewer.zoom
    with Reader(str(predict.path("prediction"))) as reader:
        bounds = reader.get_geographic_bounds("EPSG:4326")
    counts = {}
    layers = [name for name in LAYERS if name in predict.files]
    for name in layers:
        counts[name] = write_tiles(predict.path(name), folder / "tiles" / name, name, bounds, zmin, zmax)
    copy_leaflet(folder / "leaflet")
    shown_as = None
    if "rgb" in layers:  # true colour, or radar's false colour (the COG says which)
        with Reader(str(predict.path("rgb"))) as reader:
            shown_as = reader.dataset.descriptions[0]
    values = lookup(predict.path("prediction"), predict.path("confidence"))
    embeddings = inputs.get("embeddings")
    if embeddings is not None:  # the first three PCA components as colour, and the codes to search
        decoded = _decoded(embeddings.path("embeddings"), json.loads(embeddings.path("sidecar").read_text()))
        colour = folder / ".embeddings.rgb.tif"
        write_embedding_colour(decoded, colour)
        counts["embeddings"] = write_tiles(colour, folder / "tiles" / "embeddings", "embeddings", bounds, zmin, zmax)
        colour.unlink()
        layers.append("embeddings")
        values["neighbours"] = neighbour_codes(decoded)
    page = render_page(recipe, bundle, bounds, zmin, zmax, layers, inputs["export"].summary, shown_as, values)
    (folder / "index.html").write_text(page, encoding="utf-8")
    return StageOutput(files={"viewer": "viewer/index.html"},
                       summary={"viewer": "@viewer", "viewer_tiles": counts})


def write_tiles(path: Path, out: Path, layer: str, bounds, zmin: int, zmax: int) -> int:
    import morecantile
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    tms = morecantile.tms.get("WebMercatorQuad")
    written = 0
    with Reader(str(path), tms=tms) as reader:
        for tile in tms.tiles(*bounds, zooms=list(range(zmin, zmax + 1))):
            try:
                png = render_tile(reader, layer, tile.x, tile.y, tile.z)
            except TileOutsideBounds:
                continue
            target = out / str(tile.z) / str(tile.x) / f"{tile.y}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
            written += 1
    return written


def render_tile(reader, layer: str, x: int, y: int, z: int) -> bytes:
    """One web-mercator PNG tile of a layer (the static viewer and `instarun serve` share it):
    classes in their colour table, confidence through viridis, true colour as it is."""
    from rio_tiler.colormap import cmap

    image = reader.tile(x, y, z, resampling_method="nearest")
    if layer == "prediction":
        colours = {k: v for k, v in reader.dataset.colormap(1).items() if k != 255}
        return image.render(img_format="PNG", colormap=colours)
    if layer == "confidence":
        image.array.fill_value = 0  # not NaN: the rescaled array is uint8
        image.rescale(((0.0, 1.0),))
        return image.render(img_format="PNG", colormap=cmap.get("viridis"))
    return image.render(img_format="PNG")


def lookup(prediction: Path, confidence: Path) -> dict:
    """Classes and confidence (0-255) on a lon/lat grid over the map (nearest, at most
    LOOKUP_SIZE a side), base64 rows from the north, for the page's click."""
    import base64

    import numpy as np
    from rio_tiler.io import Reader

    grids = []
    for path in (prediction, confidence):
        with Reader(str(path)) as reader:
            bounds = reader.get_geographic_bounds("EPSG:4326")
            image = reader.part(bounds, dst_crs="EPSG:4326", bounds_crs="EPSG:4326", max_size=LOOKUP_SIZE,
                                resampling_method="nearest")
        grids.append(image)
    classes = np.where(grids[0].mask > 0, grids[0].data[0], 255).astype(np.uint8)
    score = np.where((grids[1].mask > 0) & np.isfinite(grids[1].data[0]),
                     np.round(np.nan_to_num(grids[1].data[0]) * 254), 255).astype(np.uint8)  # 255: none
    west, south, east, north = grids[0].bounds
    return {"west": west, "south": south, "east": east, "north": north, "width": classes.shape[1],
            "height": classes.shape[0], "classes": base64.b64encode(classes.tobytes()).decode(),
            "confidence": base64.b64encode(score.tobytes()).decode()}


def _decoded(path: Path, sidecar: dict):
    """(vectors (dims, H, W) float32, where there is data, the COG's transform and CRS)."""
    import numpy as np
    import rasterio

    from instageo.engine.vectors import decode

    with rasterio.open(path) as dataset:
        codes, mask = dataset.read(), dataset.read_masks(1) > 0
        transform, crs = dataset.transform, dataset.crs
    vectors = decode(codes, sidecar["quantize"], sidecar["dims"], axis=0)
    valid = mask & np.isfinite(vectors).all(0) if sidecar["quantize"] != "int8" else (codes != -128).all(0)
    return np.nan_to_num(vectors), valid, transform, crs


def write_embedding_colour(decoded: tuple, out: Path) -> None:
    """The first three PCA components as red, green and blue (each stretched over its 2nd-98th
    percentile to 1-255; 0: no data), on the COG's grid. ``decoded``: what _decoded returns."""
    import numpy as np
    import rasterio

    vectors, valid, transform, crs = decoded
    channels = []
    for component in vectors[:3] if len(vectors) >= 3 else [vectors[0]] * 3:
        low, high = np.percentile(component[valid], (2, 98)) if valid.any() else (0.0, 1.0)
        scaled = np.clip((component - low) / max(high - low, 1e-9), 0, 1) * 254 + 1
        channels.append(np.where(valid, scaled, 0).astype(np.uint8))
    with rasterio.open(out, "w", driver="GTiff", width=valid.shape[1], height=valid.shape[0], count=3, dtype="uint8",
                       crs=crs, transform=transform, nodata=0) as dataset:
        dataset.write(np.stack(channels))


def neighbour_codes(decoded: tuple) -> dict | None:
    """Every cell with data: its centre (lat, lon, float32) and its vector as int8 (127 x the
    unit vector), base64, for the page's nearest-neighbour search by cosine; None when there
    are more than MAX_NEIGHBOUR_CELLS."""
    import base64

    import numpy as np
    from pyproj import Transformer

    vectors, valid, transform, crs = decoded
    rows, columns = np.nonzero(valid)
    if len(rows) > MAX_NEIGHBOUR_CELLS or not len(rows):
        return None
    xs, ys = transform * (columns + 0.5, rows + 0.5)
    lons, lats = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    codes = np.clip(np.rint(vectors[:, rows, columns].T * 127), -127, 127).astype(np.int8)
    centres = np.stack([lats, lons], axis=1).astype(np.float32)
    return {"dims": int(codes.shape[1]), "k": NEIGHBOURS, "cell_m": float(abs(transform.a)),
            "centres": base64.b64encode(centres.tobytes()).decode(), "codes": base64.b64encode(codes.tobytes()).decode()}


def copy_leaflet(out: Path) -> None:
    import xstatic.pkg.leaflet as leaflet

    source = Path(leaflet.BASE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("leaflet.js", "leaflet.css"):
        shutil.copy(source / name, out / name)
    shutil.copytree(source / "images", out / "images", dirs_exist_ok=True)


def render_page(recipe: Recipe, bundle: dict, bounds, zmin: int, zmax: int, layers: list[str],
                export_summary: dict, input_shown_as: str | None = None, values: dict | None = None) -> str:
    west, south, east, north = bounds
    legend = "".join(
        f'<div><span class="swatch" style="background:{html.escape(c)}"></span>{html.escape(n)}</div>'
        for n, c in zip(bundle["classes"], bundle["colours"]))
    metrics = bundle.get("metrics", {})
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in metrics.items() if not isinstance(v, list))
    config = {"bounds": [[south, west], [north, east]], "minZoom": zmin, "maxZoom": zmax,
              "layers": layers, "classes": bundle["classes"], "lookup": values,
              "labels": {"rgb": f"Input ({input_shown_as or 'true colour'})", "prediction": "Prediction",
                         "confidence": "Confidence", "embeddings": "Embeddings (PCA 1-3 as colour)"}}
    return PAGE.format(
        title=html.escape(f"{recipe.name}: {bundle['backbone']} student, depth {bundle['depth']}"),
        legend=legend, metrics=rows, onnx_diff=_fmt(export_summary.get("onnx_max_abs_diff", "")),
        config=json.dumps(config))


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="leaflet/leaflet.css">
<script src="leaflet/leaflet.js"></script>
<style>
  html, body {{ margin: 0; height: 100%; font: 13px/1.4 sans-serif; }}
  #map {{ position: absolute; inset: 0 260px 0 0; background: #222; }}
  #panel {{ position: absolute; top: 0; right: 0; width: 244px; bottom: 0; padding: 8px; overflow: auto; }}
  .swatch {{ display: inline-block; width: 14px; height: 14px; margin-right: 6px; vertical-align: middle; }}
  table {{ border-collapse: collapse; }} td {{ padding: 1px 6px 1px 0; }}
</style>
</head>
<body>
<div id="map"></div>
<div id="panel">
  <h3>{title}</h3>
  <label>Prediction opacity <input id="opacity" type="range" min="0" max="1" step="0.05" value="0.7"></label>
  <h4>Legend</h4>{legend}
  <h4>Test metrics</h4><table>{metrics}</table>
  <p>ONNX vs PyTorch, max |logit difference|: {onnx_diff}</p>
  <h4>Point</h4><div id="point">click the map</div>
  <div id="similar"></div>
</div>
<script>
const config = {config};
const map = L.map("map", {{ minZoom: config.minZoom, maxZoom: config.maxZoom + 2 }});
map.fitBounds(config.bounds);
const overlays = {{}};
for (const name of config.layers) {{
  overlays[config.labels[name]] = L.tileLayer("tiles/" + name + "/{{z}}/{{x}}/{{y}}.png", {{
    minZoom: config.minZoom, maxNativeZoom: config.maxZoom, maxZoom: config.maxZoom + 2,
    bounds: config.bounds, opacity: name === "rgb" ? 1 : 0.7,
  }});
}}
if (overlays[config.labels.rgb]) overlays[config.labels.rgb].addTo(map);
overlays[config.labels.prediction].addTo(map);
L.control.layers(null, overlays, {{ collapsed: false }}).addTo(map);
L.rectangle(config.bounds, {{ color: "#ffcc00", weight: 2, fill: false }}).addTo(map);
document.getElementById("opacity").addEventListener("input", (event) => {{
  overlays[config.labels.prediction].setOpacity(Number(event.target.value));
}});
L.control.scale({{ imperial: false }}).addTo(map);
const grid = config.lookup && {{
  classes: Uint8Array.from(atob(config.lookup.classes), (c) => c.charCodeAt(0)),
  confidence: Uint8Array.from(atob(config.lookup.confidence), (c) => c.charCodeAt(0)),
}};
map.on("click", (event) => {{  // the embedded grid's pixel under the click
  const g = config.lookup, lat = event.latlng.lat, lon = event.latlng.lng;
  const column = Math.floor((lon - g.west) / (g.east - g.west) * g.width);
  const row = Math.floor((g.north - lat) / (g.north - g.south) * g.height);
  const inside = column >= 0 && column < g.width && row >= 0 && row < g.height;
  const index = row * g.width + column, value = inside ? grid.classes[index] : 255;
  const text = value === 255 ? "no data" : config.classes[value];
  const score = inside && grid.confidence[index] !== 255 ? (grid.confidence[index] / 254).toFixed(2) : "-";
  const point = document.getElementById("point");
  point.innerHTML = `<div>${{lat.toFixed(5)}}, ${{lon.toFixed(5)}}</div><div>class <b class="point-class"></b></div>`
    + `<div>confidence ${{score}}</div>`;
  point.querySelector(".point-class").textContent = text;
  L.popup().setLatLng(event.latlng).setContent(point.innerHTML).openOn(map);
  window.lastClick = [lat, lon];
  if (near) showNeighbours(lat, lon);
}});
const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0)).buffer;
const near = config.lookup && config.lookup.neighbours && (() => {{
  const n = config.lookup.neighbours, codes = new Int8Array(bytes(n.codes)), cells = codes.length / n.dims;
  const norms = new Float64Array(cells);
  for (let i = 0; i < cells; i++) {{
    let sum = 0;
    for (let d = 0; d < n.dims; d++) sum += codes[i * n.dims + d] ** 2;
    norms[i] = Math.sqrt(sum) || 1;
  }}
  return {{ ...n, codes, cells, norms, centres: new Float32Array(bytes(n.centres)) }};
}})();
window.neighbours = [];
window.similarities = [];
function showNeighbours(lat, lon) {{  // the cells most like the clicked one, by cosine of their codes
  const scale = Math.cos(lat * Math.PI / 180);
  let clicked = -1, nearest = Infinity;
  for (let i = 0; i < near.cells; i++) {{
    const d = (near.centres[2 * i] - lat) ** 2 + ((near.centres[2 * i + 1] - lon) * scale) ** 2;
    if (d < nearest) {{ nearest = d; clicked = i; }}
  }}
  window.neighbours.forEach((marker) => map.removeLayer(marker));
  window.neighbours = [];
  window.similarities = [];
  const similar = document.getElementById("similar");
  if (clicked < 0 || Math.sqrt(nearest) * 111320 > near.cell_m) {{ similar.textContent = ""; return; }}
  const scores = new Float64Array(near.cells), base = clicked * near.dims;
  for (let i = 0; i < near.cells; i++) {{
    let dot = 0;
    for (let d = 0; d < near.dims; d++) dot += near.codes[base + d] * near.codes[i * near.dims + d];
    scores[i] = dot / (near.norms[clicked] * near.norms[i]);
  }}
  const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a]).slice(0, near.k);
  for (const i of order) {{
    window.neighbours.push(L.circleMarker([near.centres[2 * i], near.centres[2 * i + 1]], {{
      radius: 6, color: "#ff00ff", weight: 2, fill: false, className: "neighbour" }}).addTo(map));
    window.similarities.push(scores[i]);
  }}
  similar.textContent = `${{near.k}} most similar cells (cosine): `
    + window.similarities.map((s) => s.toFixed(3)).join(", ");
}}
</script>
</body>
</html>
"""
