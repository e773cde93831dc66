// aevb explore: the page. Plain JavaScript, no libraries, nothing loaded from elsewhere.
// Every request is a small JSON POST; images come back as PNG data URLs. While a request
// of one kind is in flight, newer ones of that kind wait and only the latest is sent
// (`live`), so dragging never queues up stale work.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"];
const state = {info: null, z: null, y: null, marker: null, drawn: null, interp: null,
               background: null, picks: [], seed: 1, times: []};

// ------------------------------------------------------------------ requests
async function post(path, body) {
  const res = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify(body)});
  const timing = /dur=([0-9.]+)/.exec(res.headers.get("Server-Timing") || "");
  const ms = timing ? parseFloat(timing[1]) : NaN;
  if (timing) state.times.push(ms);
  const data = await res.json();
  if (!res.ok) throw new Error(`${path}: ${data.error || res.status}`);
  $("status").textContent = "";
  showTimings();
  return Object.assign(data, {ms});
}

function live(path, onResult) {
  let busy = false, pending = null;
  const send = async (body) => {
    busy = true;
    try { onResult(await post(path, body)); } catch (e) { $("status").textContent = e.message; }
    busy = false;
    if (pending) { const next = pending; pending = null; send(next); }
  };
  return (body) => { if (busy) pending = body; else send(body); };
}

function quantile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN;
}

function showTimings() {
  const t = state.times;
  $("timings").textContent = `server time per request (this page, ${t.length} requests): ` +
    `median ${quantile(t, 0.5).toFixed(1)} ms, p90 ${quantile(t, 0.9).toFixed(1)} ms`;
}

const withClass = (body) => (state.info.num_classes ? Object.assign(body, {y: state.y}) : body);

// ------------------------------------------------------------------ the map
function toCanvas(u, v) {
  const [x0, x1, y0, y1] = state.info.map.extent, c = $("map");
  return [(u - x0) / (x1 - x0) * c.width, (1 - (v - y0) / (y1 - y0)) * c.height];
}

function fromCanvas(px, py) {
  const [x0, x1, y0, y1] = state.info.map.extent, c = $("map");
  const clamp = (a, lo, hi) => Math.min(hi, Math.max(lo, a));
  return [clamp(x0 + px / c.width * (x1 - x0), x0, x1), clamp(y1 - py / c.height * (y1 - y0), y0, y1)];
}

function colour(label) { return label === null ? "#555" : PALETTE[label % PALETTE.length]; }

function drawMarker(ctx, point, style, size) {
  if (!point) return;
  const [x, y] = toCanvas(point[0], point[1]);
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 4; ctx.beginPath(); ctx.arc(x, y, size, 0, 7); ctx.stroke();
  ctx.strokeStyle = style; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(x, y, size, 0, 7); ctx.stroke();
}

function drawMap() {
  const c = $("map"), ctx = c.getContext("2d"), m = state.info.map;
  ctx.clearRect(0, 0, c.width, c.height);
  if (state.background) {
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = 0.45; ctx.drawImage(state.background, 0, 0, c.width, c.height); ctx.globalAlpha = 1;
  }
  for (let i = 0; i < m.x.length; i++) {
    const [x, y] = toCanvas(m.x[i], m.y[i]);
    ctx.fillStyle = colour(m.labels ? m.labels[i] : null);
    ctx.globalAlpha = 0.85; ctx.fillRect(x - 2, y - 2, 4, 4);
  }
  ctx.globalAlpha = 1;
  drawMarker(ctx, state.interp, "#ff00ff", 6);
  drawMarker(ctx, state.drawn, "#00c000", 8);
  drawMarker(ctx, state.marker, "#000", 7);
}

async function loadBackground() {
  if (!state.info.map.plane) { state.background = null; drawMap(); return; }
  const res = await post("/api/background", withClass({}));
  const img = new Image();
  img.onload = () => { state.background = img; drawMap(); };
  img.src = res.image;
}

function legend() {
  const m = state.info.map;
  if (!m.labels) return;
  for (const l of [...new Set(m.labels)].sort((a, b) => a - b)) {
    const item = document.createElement("span"), dot = document.createElement("i");
    dot.style.background = colour(l);
    item.append(dot, String(labelName(l)));
    $("legend").appendChild(item);
  }
}

// ------------------------------------------------------------------ decoded image and sliders
function showDecoded(res) {
  state.z = res.z; state.marker = res.map;
  $("decoded").src = res.image;
  $("decode-time").textContent = `server: ${res.ms.toFixed(1)} ms`;
  for (const s of document.querySelectorAll("#sliders input")) s.value = state.z[+s.dataset.dim];
  drawMap();
}

const decodeLive = live("/api/decode", showDecoded);
const mapLive = live("/api/map", showDecoded);

function buildSliders() {
  const info = state.info;
  $("slider-note").textContent = info.latent_dim > info.sliders.length
    ? `(the ${info.sliders.length} most active of ${info.latent_dim}, by the variance of the test codes)`
    : "(most active first: the variance of the test codes)";
  for (const s of info.sliders) {
    const label = document.createElement("label");
    const [lo, hi] = s.range;
    label.innerHTML = `<span class="name">z${s.dim} <small>(${s.variance.toPrecision(2)})</small></span>`;
    const input = Object.assign(document.createElement("input"),
      {type: "range", min: lo, max: hi, step: (hi - lo) / 400, value: state.z[s.dim]});
    input.dataset.dim = s.dim;
    input.setAttribute("aria-label", `latent dimension ${s.dim}`);
    input.addEventListener("input", () => {
      state.z[s.dim] = parseFloat(input.value);
      decodeLive(withClass({z: state.z}));
    });
    label.appendChild(input);
    $("sliders").appendChild(label);
  }
}

function mapEvents() {
  const c = $("map");
  let dragging = false;
  const at = (e) => {
    const r = c.getBoundingClientRect();
    return fromCanvas((e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height);
  };
  c.addEventListener("pointerdown", (e) => {
    dragging = true; c.setPointerCapture(e.pointerId); mapLive(withClass({point: at(e)}));
  });
  c.addEventListener("pointermove", (e) => { if (dragging) mapLive(withClass({point: at(e)})); });
  c.addEventListener("pointerup", () => { dragging = false; });
}

// ------------------------------------------------------------------ interpolation
function drawGallery() {
  const g = state.info.gallery, c = $("gallery"), img = state.galleryImage;
  if (!img) return;
  const [, h, w] = state.info.input_shape, scale = Math.max(1, Math.floor(36 / Math.max(h, w)));
  state.galleryScale = scale;
  c.width = img.width * scale; c.height = img.height * scale;
  const ctx = c.getContext("2d");
  ctx.imageSmoothingEnabled = false; ctx.drawImage(img, 0, 0, c.width, c.height);
  state.picks.forEach((i, k) => {
    ctx.strokeStyle = k === 0 ? "#ff3030" : "#3080ff"; ctx.lineWidth = 2;
    ctx.strokeRect((i % g.cols) * w * scale + 1, Math.floor(i / g.cols) * h * scale + 1, w * scale - 2, h * scale - 2);
  });
}

const interpLive = live("/api/interpolate", (res) => {
  $("interp").src = res.image; state.interp = res.map; drawMap();
});

function galleryEvents() {
  const c = $("gallery"), g = state.info.gallery, [, h, w] = state.info.input_shape;
  c.addEventListener("click", (e) => {
    const r = c.getBoundingClientRect();
    const cell = state.galleryScale;
    const col = Math.floor((e.clientX - r.left) * c.width / r.width / (w * cell));
    const row = Math.floor((e.clientY - r.top) * c.height / r.height / (h * cell));
    const i = row * g.cols + col;
    if (col < 0 || col >= g.cols || i < 0 || i >= g.n) return;
    state.picks = state.picks.length === 1 ? [state.picks[0], i] : [i];
    const name = (k) => (k === undefined ? "-" : `#${k}` + (g.labels ? ` (${labelName(g.labels[k])})` : ""));
    $("pick").textContent = `A: ${name(state.picks[0])}, B: ${name(state.picks[1])}`;
    $("t").disabled = state.picks.length < 2;
    drawGallery();
    if (state.picks.length === 2) interpolate();
  });
  $("t").addEventListener("input", interpolate);
}

function interpolate() {
  const [a, b] = state.picks;
  interpLive(withClass({a, b, t: parseFloat($("t").value)}));
}

function labelName(l) { const n = state.info.class_names; return n && n[l] ? n[l] : l; }

// ------------------------------------------------------------------ drawing and uploading
const encodeLive = live("/api/encode", (res) => {
  $("input").src = res.input; $("recon").src = res.reconstruction;
  state.drawn = res.map; drawMap();
  const sc = state.info.score;
  const fmt = (x, d) => (x === null ? "?" : x.toFixed(d));
  $("score").innerHTML = `anomaly score <b>${fmt(res.score, 1)} nats</b> (${sc.kind}): ` +
    `higher than <b>${fmt(res.percentile, 0)}%</b> of ${sc.reference} test images ` +
    `(their median ${sc.reference_median}). <span class="timing">server: ${res.ms.toFixed(1)} ms</span>`;
});

function encode(dataUrl) {
  state.lastImage = dataUrl;
  encodeLive(withClass({image: dataUrl, fit: $("fit").checked, invert: $("invert").checked}));
}

function padEvents() {
  const c = $("pad"), ctx = c.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, c.width, c.height); };
  clear();
  let last = null;
  const at = (e) => {
    const r = c.getBoundingClientRect();
    return [(e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height];
  };
  c.addEventListener("pointerdown", (e) => { c.setPointerCapture(e.pointerId); last = at(e); });
  c.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = at(e);
    // a stroke about 2.5 pixels of the model's input wide (MNIST: 25 of 280)
    const width = Math.max(18, 2.5 * c.height / state.info.input_shape[1]);
    Object.assign(ctx, {strokeStyle: "#fff", lineWidth: width, lineCap: "round", lineJoin: "round"});
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
    last = p;
    encode(c.toDataURL("image/png"));
  });
  c.addEventListener("pointerup", () => { if (last) encode(c.toDataURL("image/png")); last = null; });
  $("clear").addEventListener("click", clear);
  $("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => encode(reader.result);
    reader.readAsDataURL(file);
  });
  for (const id of ["fit", "invert"]) $(id).addEventListener("change", () => state.lastImage && encode(state.lastImage));
}

// ------------------------------------------------------------------ sampling
const sampleLive = live("/api/sample", (res) => {
  $("samples").innerHTML = "";
  for (const src of res.images) $("samples").appendChild(Object.assign(new Image(), {src, alt: "sample"}));
});

function sample() {
  const t = parseFloat($("temperature").value);
  $("temperature-value").textContent = t.toFixed(2);
  sampleLive(withClass({n: 8, temperature: t, seed: state.seed}));
}

function sampleNote() {
  const p = state.info.prior;
  $("sample-note").textContent = p === "standard_normal"
    ? "z = temperature x eps, eps ~ N(0, I) (the prior at temperature 1); the same eps while you move the temperature."
    : p === "none" ? "No prior (an autoencoder): codes from a Gaussian fitted to the test codes, its spread scaled by the temperature."
    : "Samples from the model's prior (binary codes): the temperature does not apply.";
}

// ------------------------------------------------------------------ start
function header(info) {
  $("run").textContent = info.run;
  const i = info.info;
  $("model").textContent = `${i.model || "model"} · ${i.net || ""} ${JSON.stringify(i.hidden || [])} · ` +
    `latent ${info.latent_dim}${i.latent_family ? " " + i.latent_family : ""} · ${i.likelihood || ""} likelihood · ` +
    `dataset ${i.dataset} · input ${info.input_shape.join("x")}` + (info.num_classes ? ` · conditional on ${info.num_classes} classes` : "");
  $("notes").innerHTML = "";
  for (const n of info.notes) $("notes").appendChild(Object.assign(document.createElement("li"), {textContent: n}));
  $("map-describe").textContent = info.map.describe;
}

function classSelect(info) {
  if (!info.num_classes) return;
  $("class-row").hidden = false;
  for (let k = 0; k < info.num_classes; k++) {
    $("class").appendChild(Object.assign(document.createElement("option"), {value: k, textContent: labelName(k)}));
  }
  state.y = 0;
  $("class").addEventListener("change", () => {
    state.y = parseInt($("class").value, 10);
    loadBackground(); decodeLive(withClass({z: state.z})); sample();
    if (state.picks.length === 2) interpolate();
    if (state.lastImage) encode(state.lastImage);
  });
}

async function start() {
  const info = state.info = await (await fetch("/api/info")).json();
  state.z = info.start.slice();
  header(info); classSelect(info); legend(); buildSliders(); sampleNote();
  $("fit").checked = info.input_shape[0] === 1;
  mapEvents(); padEvents();
  if (info.gallery.image) {
    state.galleryImage = await new Promise((ok) => { const im = new Image(); im.onload = () => ok(im); im.src = info.gallery.image; });
    drawGallery(); galleryEvents();
  }
  $("temperature").addEventListener("input", sample);
  $("resample").addEventListener("click", () => { state.seed = Math.floor(Math.random() * 2 ** 31); sample(); });
  await loadBackground();
  decodeLive(withClass({z: state.z}));
  sample();
  document.body.dataset.ready = "1";
}

start().catch((e) => { $("status").textContent = `could not start: ${e.message}`; });
