"""The page ``declip-mm serve`` shows (plain HTML + JS, no external resource): a form (image, vocabulary,
background), then the overlay and the per-class area table. Kept as a Python string so that a ``pip install``
carries it without package-data rules. ``/?example=1`` segments the server's example photo on load
(``&vocabulary=...`` / ``&background=...`` override the example's). For tests, ``body[data-state]`` is
idle / busy / done / error and the overlay ``img[data-rect]`` holds its on-screen box "left,top,width,height".

The attention explorer (below the result): a click on the photo POSTs ``/api/attention`` with the click's position
on the shown photo and the shown size (the server maps it to the image's pixel, then to a token, with the command
line's rule) and shows the grid of maps; ``img#attention[data-token]`` holds the token "row,col". With
``/?example=1&click=X,Y`` the page clicks the shown photo at (X, Y) page pixels from its top-left corner once the
example is segmented.

A server with random weights renders the page with a banner (:func:`render_page`), so it shows without script;
the script also shows it when an answer says ``"random_weights": true``. The page's POSTs are same-origin JSON
(``Content-Type: application/json``; the browser adds the ``Origin`` header), which is what the server requires.
"""
import html
from typing import Optional

_PAGE_TEMPLATE = '''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>DeCLIP open-vocabulary segmentation</title>
<style>
  body { font-family: sans-serif; margin: 0; color: #1b1b1b; background: #ffffff; }
  header { background: #1f4e8c; color: #ffffff; padding: 12px 20px; }
  header h1 { margin: 0; font-size: 20px; }
  header p { margin: 4px 0 0; font-size: 13px; }
  main { padding: 16px 20px; }
  form { display: grid; grid-template-columns: max-content 420px; gap: 8px 12px; align-items: center; }
  label { font-weight: bold; font-size: 14px; }
  input[type=text] { font-size: 14px; padding: 4px; }
  button { font-size: 15px; padding: 6px 18px; grid-column: 2; justify-self: start; }
  #status { margin: 12px 0; font-size: 14px; min-height: 18px; }
  #error { display: none; margin: 12px 0; padding: 10px; border: 2px solid #b00020; background: #fdecee;
           color: #b00020; font-weight: bold; white-space: pre-wrap; }
  #result { display: none; gap: 24px; align-items: flex-start; }
  #overlay { display: block; max-width: none; image-rendering: pixelated; }
  table { border-collapse: collapse; font-size: 14px; }
  th, td { border: 1px solid #bbbbbb; padding: 4px 10px; text-align: left; }
  td.area { text-align: right; font-variant-numeric: tabular-nums; }
  #random-weights { margin: 0; padding: 12px 20px; background: #ffb300; color: #000000; font-weight: bold;
                    font-size: 16px; border-bottom: 3px solid #000000; }
  #random-weights[hidden] { display: none; }
  #explore { display: none; margin-top: 20px; }
  #explore h2 { font-size: 17px; margin: 0 0 6px; }
  #photo { display: block; max-width: 480px; cursor: crosshair; margin-bottom: 10px; }
</style>
</head>
<body data-state="idle">
<header>
  <h1>DeCLIP open-vocabulary segmentation</h1>
  <p id="model"></p>
</header>
<p id="random-weights" role="alert"{banner_hidden}>{banner_text}</p>
<main>
  <form id="form">
    <label for="image">Image</label>
    <input type="file" id="image" accept="image/*">
    <label for="vocabulary">Vocabulary</label>
    <input type="text" id="vocabulary" placeholder="cat, dog, sofa; couch">
    <label for="background">Background (optional)</label>
    <input type="text" id="background" placeholder="e.g. background (empty: none)">
    <button type="submit" id="run">Segment</button>
  </form>
  <p style="font-size: 13px; color: #555555">Classes are separated by commas; synonyms of one class by ';'.
    A named background class takes the pixels no class is confident about.</p>
  <div id="status" aria-live="polite"></div>
  <div id="error" role="alert"></div>
  <div id="result">
    <img id="overlay" alt="segmentation overlay">
    <table id="areas">
      <thead><tr><th>class</th><th>area</th></tr></thead>
      <tbody></tbody>
    </table>
  </div>
  <section id="explore">
    <h2>Attention explorer</h2>
    <p style="font-size: 13px; color: #555555">Click a point of the photo: the last block's CLIP attention, the
      CSA attention, DeCLIP's context attention and the dense features' cosine similarity from that point (each map
      min-max scaled onto one colour ramp; the point is ringed).</p>
    <img id="photo" alt="the photo: click a point">
    <img id="attention" alt="attention and affinity maps">
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);

function setState(state, message) {
  document.body.dataset.state = state;
  $("status").textContent = message || "";
}

function showError(message) {
  $("error").textContent = message;
  $("error").style.display = "block";
  $("result").style.display = "none";
  setState("error", "");
}

function showRandomWeights(text) {
  const banner = $("random-weights");
  if (text) banner.textContent = text;
  banner.hidden = false;
}

function render(data) {
  if (data.random_weights) showRandomWeights(data.warning);
  const body = $("areas").querySelector("tbody");
  body.replaceChildren();
  for (const [name, fraction] of data.areas) {
    const row = document.createElement("tr");
    row.dataset.name = name;
    row.dataset.fraction = String(fraction);
    const cell = document.createElement("td");
    cell.textContent = name + (name === data.background ? " (background)" : "");
    const area = document.createElement("td");
    area.className = "area";
    area.textContent = (100 * fraction).toFixed(1) + " %";
    row.append(cell, area);
    body.append(row);
  }
  const img = $("overlay");
  img.onload = () => {
    const r = img.getBoundingClientRect();
    img.dataset.rect = [r.left, r.top, r.width, r.height].map(Math.round).join(",");
    setState("done", (data.random_weights ? "RANDOM WEIGHTS (noise, not a result): " : "") +
                     `${data.width} x ${data.height} px, ${data.class_names.length} classes, ` +
                     `${data.seconds.toFixed(2)} s`);
  };
  $("error").style.display = "none";
  $("result").style.display = "flex";
  img.src = data.overlay;
  $("photo").src = lastImage;
  $("explore").style.display = "block";
}

$("photo").addEventListener("click", explore);

let lastImage = null;

async function explore(event) {
  const r = $("photo").getBoundingClientRect();
  const click = [event.clientX - r.left, event.clientY - r.top];
  setState("busy", "computing the maps ...");
  let response, data;
  try {
    response = await fetch("/api/attention", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({image: lastImage, click: click, shown: [r.width, r.height]})});
    data = await response.json();
  } catch (err) {
    showError("request failed: " + err);
    return;
  }
  if (!response.ok) { showError(data.error || ("HTTP " + response.status)); return; }
  if (data.random_weights) showRandomWeights(data.warning);
  const img = $("attention");
  img.dataset.token = data.token.join(",");
  img.onload = () => setState("done", `point ${data.point.map((v) => v.toFixed(1)).join(", ")} -> token ` +
                                      `${data.token.join(", ")} of ${data.grid.join(" x ")}`);
  img.src = data.figure;
}

async function segment(image, vocabulary, background) {
  lastImage = image;
  setState("busy", "segmenting ...");
  let response, data;
  try {
    response = await fetch("/api/segment", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({image: image, vocabulary: vocabulary, background: background || null})});
    data = await response.json();
  } catch (err) {
    showError("request failed: " + err);
    return;
  }
  if (!response.ok) { showError(data.error || ("HTTP " + response.status)); return; }
  render(data);
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("image").files[0];
  segment(file ? await readFile(file) : null, $("vocabulary").value, $("background").value);
});

async function start() {
  try {
    const info = await (await fetch("/api/info")).json();
    $("model").textContent = info.model;
    if (info.random_weights) showRandomWeights(info.warning);
  } catch (err) { /* the page works without it */ }
  const query = new URLSearchParams(window.location.search);
  if (!query.has("example")) return;
  const response = await fetch("/api/example");
  const example = await response.json();
  if (!response.ok) { showError(example.error); return; }
  $("vocabulary").value = query.has("vocabulary") ? query.get("vocabulary") : example.vocabulary;
  $("background").value = query.has("background") ? query.get("background") : (example.background || "");
  await segment(example.image, $("vocabulary").value, $("background").value);
  if (!query.has("click") || document.body.dataset.state === "error") return;
  const photo = $("photo");
  await photo.decode();
  const [x, y] = query.get("click").split(",").map(Number);
  const r = photo.getBoundingClientRect();
  photo.dispatchEvent(new MouseEvent("click", {clientX: r.left + x, clientY: r.top + y, bubbles: true}));
}
start();
</script>
</body>
</html>
'''


def render_page(random_weights_warning: Optional[str] = None) -> str:
    """The page; with ``random_weights_warning`` (the server's towers are random) a banner at the top says it."""
    return (_PAGE_TEMPLATE.replace('{banner_hidden}', '' if random_weights_warning else ' hidden')
            .replace('{banner_text}', html.escape(random_weights_warning or '')))


PAGE_HTML = render_page()        # the page of a server with real weights
