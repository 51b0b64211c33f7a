"""The search page, one self-contained HTML document (inline CSS and JavaScript, no external
assets), so the server needs no static files and the page works with no network but loopback.

The script only talks to the JSON API (``/api/...``) and writes every text it receives with
``textContent``, never as markup: keys and captions come from the indexed data.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vislang search</title>
<link rel="icon" href="data:,">
<style>
:root { --bg: #f5f6f8; --card: #fff; --ink: #1b2230; --muted: #697386; --line: #e2e5ea;
        --accent: #2f62d9; --soft: #eaf0fc; --err: #b42318; --errbg: #fef3f2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background: var(--bg); color: var(--ink); }
header { background: var(--card); border-bottom: 1px solid var(--line); padding: 12px 24px;
         display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; letter-spacing: -0.01em; }
header h1 span { color: var(--accent); }
#info { color: var(--muted); font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 18px 24px 48px; }
.panels { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 16px; align-items: start; }
@media (max-width: 820px) { .panels { grid-template-columns: 1fr; } }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; }
.panel h2 { font-size: 12px; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted);
            margin: 0 0 10px; font-weight: 600; }
.row { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.grow { flex: 1; min-width: 160px; }
input[type=text], textarea, select { font: inherit; color: inherit; border: 1px solid var(--line);
  border-radius: 8px; padding: 8px 10px; background: #fff; }
input[type=text]:focus, textarea:focus, select:focus { outline: 2px solid var(--soft); border-color: var(--accent); }
textarea { width: 100%; resize: vertical; min-height: 38px; }
button { font: inherit; border: 0; border-radius: 8px; padding: 8px 14px; background: var(--accent);
         color: #fff; cursor: pointer; white-space: nowrap; }
button.secondary { background: var(--soft); color: var(--accent); }
button:disabled { opacity: 0.45; cursor: default; }
.hint { color: var(--muted); font-size: 12px; margin-top: 8px; }
.upload { display: grid; grid-template-columns: 104px minmax(0, 1fr); gap: 12px; }
#drop { width: 104px; height: 104px; border: 1px dashed #c4cad4; border-radius: 8px; background: #fafbfc;
        display: flex; align-items: center; justify-content: center; text-align: center; font-size: 12px;
        color: var(--muted); cursor: pointer; overflow: hidden; }
#drop.over { border-color: var(--accent); background: var(--soft); }
#drop img { width: 100%; height: 100%; object-fit: contain; }
#file { display: none; }
#filename { font-size: 13px; color: var(--muted); overflow-wrap: anywhere; margin-bottom: 8px; }
#labels { margin-top: 10px; display: grid; gap: 4px; }
.label { display: grid; grid-template-columns: minmax(0, 10em) minmax(0, 1fr) 4.2em; gap: 8px;
         align-items: center; font-size: 13px; }
.label .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.label .bar { height: 8px; background: var(--soft); border-radius: 4px; overflow: hidden; }
.label .bar i { display: block; height: 100%; background: var(--accent); }
.label .prob { text-align: right; font-variant-numeric: tabular-nums; }
#error { display: none; background: var(--errbg); color: var(--err); border: 1px solid #fecdca;
         border-radius: 8px; padding: 10px 12px; margin-top: 16px; }
#status { color: var(--muted); margin: 18px 0 10px; font-size: 13px; min-height: 1.4em; }
#results { display: grid; grid-template-columns: repeat(auto-fill, minmax(168px, 1fr)); gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
.card .thumb { width: 100%; aspect-ratio: 1; object-fit: contain; background: #eef0f3; display: block; }
.card .none { display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 12px; }
.card .meta { padding: 8px 10px 10px; font-size: 13px; }
.card .top { display: flex; justify-content: space-between; gap: 6px; }
.card .rank { color: var(--muted); }
.card .score { font-weight: 600; font-variant-numeric: tabular-nums; }
.card .key { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; margin-top: 2px; }
.card .caption { margin-top: 4px; }
</style>
</head>
<body>
<header><h1><span>vislang</span> search</h1><div id="info">loading the index&hellip;</div></header>
<main>
<div class="panels">
  <section class="panel">
    <h2>Search by text</h2>
    <form id="text-form" class="row">
      <input id="q" class="grow" type="text" name="q" placeholder="a red circle to the left of a blue square"
             autocomplete="off" aria-label="query">
      <select id="k" aria-label="number of results"><option>10</option><option selected>20</option>
        <option>50</option><option>100</option></select>
      <button id="search" type="submit">Search</button>
    </form>
    <div class="hint">Finds the indexed images nearest to the text.</div>
  </section>
  <section class="panel">
    <h2>Search by image &middot; label it</h2>
    <div class="upload">
      <label id="drop" for="file" title="choose or drop an image">drop an image or click</label>
      <div>
        <input id="file" type="file" accept="image/*">
        <div id="filename">no image chosen</div>
        <div class="row">
          <button id="by-image" type="button" class="needs-file">Similar images</button>
          <button id="to-text" type="button" class="needs-file secondary" hidden>Matching captions</button>
        </div>
      </div>
    </div>
    <form id="label-form" class="row" style="margin-top: 10px">
      <input id="classes" class="grow" type="text" placeholder="class names: circle, square, triangle"
             autocomplete="off" aria-label="class names">
      <button id="label" type="submit" class="needs-file secondary">Label image</button>
    </form>
    <div id="labels"></div>
  </section>
</div>
<div id="error" role="alert"></div>
<div id="status"></div>
<div id="results"></div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let info = null, file = null, pending = 0;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").style.display = message ? "block" : "none";
}

function refresh() {
  for (const b of document.querySelectorAll("button")) {
    b.disabled = pending > 0 || (b.classList.contains("needs-file") && !file);
  }
}

async function api(url, options) {
  let response;
  try { response = await fetch(url, options); }
  catch (e) { throw new Error("the server did not answer (" + e.message + ")"); }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || ("the server answered " + response.status));
  return body;
}

async function run(task) {
  pending += 1; refresh(); showError("");
  try { await task(); }
  catch (e) { showError(e.message); }
  finally { pending -= 1; refresh(); }
}

function card(hit) {
  const node = el("div", "card");
  node.dataset.id = hit.id; node.dataset.key = hit.key; node.dataset.score = hit.score;
  const img = el("img", "thumb");
  img.alt = hit.key; img.loading = "lazy"; img.src = hit.thumb;
  img.onload = () => { if (img.naturalWidth < 96) img.style.imageRendering = "pixelated"; };
  img.onerror = () => img.replaceWith(el("div", "thumb none", "no thumbnail"));
  const meta = el("div", "meta"), top = el("div", "top");
  top.append(el("span", "rank", "#" + hit.rank), el("span", "score", hit.score.toFixed(4)));
  meta.append(top, el("div", "key", hit.key));
  if (hit.caption) meta.append(el("div", "caption", hit.caption));
  node.append(img, meta);
  return node;
}

function show(results, what, started) {
  const ms = Math.round(performance.now() - started);
  $("status").textContent = results.length + " " + what + " (" + ms + " ms)";
  $("results").replaceChildren(...results.map(card));
}

function k() { return Number($("k").value); }

function searchText(event) {
  if (event) event.preventDefault();
  const q = $("q").value.trim();
  if (!q) { showError("type something to search for"); return; }
  history.replaceState(null, "", "?q=" + encodeURIComponent(q));
  run(async () => {
    const started = performance.now();
    const body = await api("/api/search?q=" + encodeURIComponent(q) + "&k=" + k());
    show(body.results, "images for \\u201c" + q + "\\u201d", started);
  });
}

function upload(extra) {
  const form = new FormData();
  form.append("file", file, file.name);
  for (const [name, value] of Object.entries(extra)) form.append(name, value);
  return { method: "POST", body: form };
}

function searchImage(to) {
  run(async () => {
    const started = performance.now();
    const body = await api("/api/search/image", upload({ k: k(), to: to }));
    show(body.results, to === "text" ? "captions for the image" : "images like the image", started);
  });
}

function labelImage(event) {
  event.preventDefault();
  run(async () => {
    const body = await api("/api/labels", upload({ classes: $("classes").value }));
    $("labels").replaceChildren(...body.labels.map((label) => {
      const row = el("div", "label"), bar = el("div", "bar"), fill = el("i");
      row.dataset.name = label.name; row.dataset.prob = label.prob;
      fill.style.width = (100 * label.prob).toFixed(1) + "%";
      bar.append(fill);
      row.append(el("span", "name", label.name), bar, el("span", "prob", (100 * label.prob).toFixed(1) + "%"));
      return row;
    }));
  });
}

function choose(chosen) {
  if (!chosen) return;
  if (info && chosen.size > info.max_upload_bytes) {
    showError(chosen.name + " is over the " + (info.max_upload_bytes / 1048576).toFixed(1) + " MiB upload limit");
    return;
  }
  file = chosen; showError("");
  $("filename").textContent = chosen.name + " (" + Math.max(1, Math.round(chosen.size / 1024)) + " KiB)";
  const preview = el("img");
  preview.alt = "the chosen image"; preview.src = URL.createObjectURL(chosen);
  $("drop").replaceChildren(preview);
  $("labels").replaceChildren();
  refresh();
}

$("text-form").addEventListener("submit", searchText);
$("label-form").addEventListener("submit", labelImage);
$("by-image").addEventListener("click", () => searchImage("image"));
$("to-text").addEventListener("click", () => searchImage("text"));
$("file").addEventListener("change", () => choose($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over");
                                       choose(e.dataTransfer.files[0]); });
refresh();
run(async () => {
  info = await api("/api/info");
  const model = info.model.split("/").filter(Boolean).pop() || info.model;
  $("info").textContent = info.count.toLocaleString() + " images" +
    (info.has_captions ? ", with captions" : "") + " \\u00b7 model " + model;
  $("info").title = info.model;
  $("to-text").hidden = !info.has_captions;
  const q = new URLSearchParams(location.search).get("q");
  if (q) { $("q").value = q; searchText(); }
});
</script>
</body>
</html>
"""
