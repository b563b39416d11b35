// The map app of `instarun serve`: draw an area, run a model over it, watch the job,
// inspect and compare the maps. Every request goes to the server that sent this page
// (a basemap only when the server was started with one).
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const SPLIT_COLOURS = { train: "#1f77b4", val: "#ff7f0e", test: "#d62728" };
const map = L.map("map", { maxZoom: 18, fadeAnimation: false });
L.control.scale({ imperial: false }).addTo(map);
map.createPane("compare").style.zIndex = 450; // above the first map, clipped by the slider
map.createPane("top").style.zIndex = 620; // the drawn area and the observations, above both maps
let run = null, area = null, shown = null, compared = null, observations = null, polling = null;

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function call(url, options) {
  const answer = await fetch(url, options);
  const text = await answer.text();
  if (!answer.ok) {
    let message = text;
    try { message = JSON.parse(text).error || text; } catch (_) { /* not the app's error shape */ }
    throw new Error(message);
  }
  return JSON.parse(text);
}

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  return element;
}

async function load(selectId) {
  run = await call("/api/run");
  $("title").textContent = run.name;
  if (run.basemap) L.tileLayer(run.basemap, { maxZoom: 18 }).addTo(map);
  $("model").replaceChildren(...run.models.map((m) => option(m.id, m.name)));
  if (!$("catalog").options.length) $("catalog").replaceChildren(...run.catalogues.map((c) => option(c.id, c.name)));
  $("models").tBodies[0].replaceChildren(...run.models.map((m) => {
    const row = document.createElement("tr");
    for (const value of [m.name, m.miou == null ? "-" : m.miou.toFixed(3),
                         m.chips_per_s == null ? "-" : m.chips_per_s.toFixed(1)]) {
      row.appendChild(document.createElement("td")).textContent = value;
    }
    return row;
  }));
  const keep = selectId || $("show").value;
  $("show").replaceChildren(...run.predictions.map((p) => option(p.id, p.name)));
  $("compare").replaceChildren(option("", "(none)"), ...run.predictions.map((p) => option(p.id, p.name)));
  if (keep && run.predictions.some((p) => p.id === keep)) $("show").value = keep;
  $("classes").replaceChildren(...run.task.classes.map((name, i) => {
    const row = document.createElement("div");
    row.innerHTML = `<span class="swatch" style="background:${run.colours[i]}"></span>`;
    row.appendChild(document.createTextNode(name));
    return row;
  }));
  $("splits").innerHTML = Object.entries(SPLIT_COLOURS).map(
    ([split, colour]) => `<div><span class="swatch" style="background:${colour};border-radius:7px"></span>${split}</div>`).join("");
  const first = run.predictions.find((p) => p.id === $("show").value);
  if (!map._loaded && first && first.bbox) {
    const [w, s, e, n] = first.bbox;
    map.fitBounds([[s, w], [n, e]]);
    $("date").value = first.date || "";
  } else if (!map._loaded) {
    map.setView([0, 0], 2);
  }
  draw();
}

function tiles(prediction, pane) {
  const layer = $("layer").value in prediction.layers ? $("layer").value : "prediction";
  // ?v=: a rerun gives the same id another folder; the browser must not reuse the old tiles
  return L.tileLayer(`/p/${prediction.id}/tiles/${layer}/{z}/{x}/{y}.png?v=${prediction.version}`, {
    maxZoom: 18, opacity: Number($("opacity").value), pane: pane || "overlayPane", className: `layer-${prediction.id}`,
  });
}

function draw() { // the chosen prediction, and the one compared with it on the right of the slider
  for (const layer of [shown, compared]) if (layer) map.removeLayer(layer);
  const byId = Object.fromEntries(run.predictions.map((p) => [p.id, p]));
  shown = byId[$("show").value] ? tiles(byId[$("show").value]).addTo(map) : null;
  compared = byId[$("compare").value] ? tiles(byId[$("compare").value], "compare").addTo(map) : null;
  $("swipe").hidden = !compared;
  clip();
}

function clip() {
  const pane = map.getPane("compare");
  if (!compared) { pane.style.clip = ""; return; }
  const size = map.getSize();
  const nw = map.containerPointToLayerPoint([0, 0]);
  const se = map.containerPointToLayerPoint(size);
  const x = map.containerPointToLayerPoint([Number($("swipe-slider").value) * size.x, 0]).x;
  pane.style.clip = `rect(${nw.y}px, ${se.x}px, ${se.y}px, ${x}px)`;
}

// drawing a box: press the button, then drag on the map
let drawing = false, start = null, drewAt = 0;
$("draw").addEventListener("click", () => {
  drawing = true;
  map.dragging.disable();
  $("map").style.cursor = "crosshair";
});
map.on("mousedown", (event) => {
  if (!drawing) return;
  start = event.latlng;
  if (area) map.removeLayer(area);
  area = L.rectangle([start, start], { color: "#ffcc00", weight: 2, fill: false, pane: "top" }).addTo(map);
});
map.on("mousemove", (event) => {
  $("coords").textContent = `${event.latlng.lat.toFixed(5)}, ${event.latlng.lng.toFixed(5)}`;
  if (drawing && start) area.setBounds([start, event.latlng]);
});
map.on("mouseup", () => {
  if (!drawing || !start) return;
  drawing = false;
  drewAt = Date.now(); // the click that may end the drag is not a question about a point
  start = null;
  map.dragging.enable();
  $("map").style.cursor = "";
  setArea(area.getBounds());
});

function setArea(bounds) {
  if (area) map.removeLayer(area);
  area = L.rectangle(bounds, { color: "#ffcc00", weight: 2, fill: false, pane: "top" }).addTo(map);
  const b = area.getBounds();
  $("area-text").textContent = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(4)).join(", ");
  $("run").disabled = false;
}

$("geojson").addEventListener("change", async (event) => { // its bounds are the area to predict
  fail("");
  try {
    const shape = L.geoJSON(JSON.parse(await event.target.files[0].text()));
    if (!shape.getBounds().isValid()) throw new Error("no geometry in it");
    setArea(shape.getBounds());
    map.fitBounds(shape.getBounds());
  } catch (error) {
    fail(`${event.target.files[0].name}: not a GeoJSON area (${error.message})`);
  }
});

$("run").addEventListener("click", async () => {
  fail("");
  const b = area.getBounds();
  try {
    const job = await call("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("model").value, date: $("date").value,
                             catalog: $("catalog").value === "recipe" ? "recipe" : Number($("catalog").value),
                             bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()] }),
    });
    watch(job);
  } catch (error) {
    fail(error.message);
  }
});

function watch(job) {
  $("job").hidden = false;
  $("cancel").hidden = false;
  $("run").disabled = true;
  $("cancel").onclick = () => call(`/api/jobs/${job.id}/cancel`, { method: "POST" }).catch((e) => fail(e.message));
  const show = async (current) => {
    $("job-bar").max = current.total || 1;
    $("job-bar").value = current.done;
    const eta = current.eta_seconds == null ? "" : `, about ${Math.ceil(current.eta_seconds)} s left`;
    $("job-text").textContent = current.state === "running" && current.total
      ? `tiles ${current.done}/${current.total}${eta}` : current.state;
    if (["done", "failed", "cancelled"].includes(current.state)) {
      clearInterval(polling);
      $("cancel").hidden = true;
      $("run").disabled = false;
      if (current.state === "failed") fail(current.error);
      if (current.state === "done") await load(`job-${current.key}`);
    }
  };
  clearInterval(polling);
  show(job);
  polling = setInterval(async () => {
    try { show(await call(`/api/jobs/${job.id}`)); } catch (error) { clearInterval(polling); fail(error.message); }
  }, 400);
}

map.on("click", async (event) => {
  if (drawing || Date.now() - drewAt < 500) return;
  const ids = [$("show").value, $("compare").value].filter(Boolean);
  const rows = [`<tr><td>lat, lon</td><td>${event.latlng.lat.toFixed(5)}, ${event.latlng.lng.toFixed(5)}</td></tr>`];
  for (const id of ids) {
    try {
      const inputs = id === ids[0] ? "&inputs=1" : ""; // what the model read: for the first map only
      const found = await call(`/api/point?prediction=${encodeURIComponent(id)}&lon=${event.latlng.lng}&lat=${event.latlng.lat}${inputs}`);
      const name = run.predictions.find((p) => p.id === id).name;
      rows.push(`<tr><td colspan="2"><b>${esc(name)}</b></td></tr>`);
      if (found.outside) { rows.push("<tr><td>outside the map</td></tr>"); continue; }
      rows.push(`<tr><td>class</td><td class="point-class">${found.class == null ? "no data" : esc(found.class)}</td></tr>`);
      rows.push(`<tr><td>confidence</td><td>${found.confidence == null ? "-" : found.confidence.toFixed(3)}</td></tr>`);
      if (found.rgb) rows.push(`<tr><td>input colour</td><td>${found.rgb.join(", ")}</td></tr>`);
      if (found.inputs && found.inputs.values) {
        const head = found.inputs.bands.map((b) => `<th>${esc(b)}</th>`).join("");
        const steps = found.inputs.values.map((step, t) => `<tr><td>${esc(found.inputs.dates[t])}</td>`
          + step.map((v) => `<td>${v == null ? "-" : Number(v).toPrecision(3)}</td>`).join("") + "</tr>").join("");
        rows.push(`<tr><td colspan="2"><table class="inputs"><tr><th>step</th>${head}</tr>${steps}</table></td></tr>`);
      } else if (found.inputs) {
        rows.push(`<tr><td>inputs</td><td>${esc(found.inputs.reason)}</td></tr>`);
      }
    } catch (error) {
      fail(error.message);
    }
  }
  $("point").innerHTML = `<table>${rows.join("")}</table>`;
  L.popup({ maxWidth: 320 }).setLatLng(event.latlng).setContent($("point").innerHTML).openOn(map);
});

$("observations").addEventListener("change", async (event) => {
  if (!event.target.checked) { if (observations) map.removeLayer(observations); return; }
  const points = await call("/api/observations");
  observations = L.geoJSON(points, {
    pointToLayer: (feature, latlng) => L.circleMarker(latlng, {
      pane: "top", radius: 4, weight: 1, color: "#000", fillOpacity: 0.9, fillColor: SPLIT_COLOURS[feature.properties.split] || "#999",
    }).bindTooltip(esc(`${feature.properties.label} (${feature.properties.split}, ${feature.properties.date})`)),
  }).addTo(map);
});

for (const id of ["show", "compare", "layer"]) $(id).addEventListener("change", draw);
$("opacity").addEventListener("input", () => { for (const l of [shown, compared]) if (l) l.setOpacity(Number($("opacity").value)); });
$("swipe-slider").addEventListener("input", clip);
map.on("move zoom resize", clip);
load().catch((error) => fail(error.message));
