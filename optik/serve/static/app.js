// optik serve page: pick / drop / paste an image → POST /predict?overlay=true → overlay + table.
// Plain DOM, no framework. Every server string goes through textContent (class names are data).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, file: null, seq: 0, timer: null, key: null };

// --- API key (servers started with api_key= / OPTIK_API_KEY) --------------------------------------
// Asked for when /info answers 401, kept for this tab only (sessionStorage: gone when the tab closes,
// never in the URL, history or server logs) and sent as "Authorization: Bearer <key>".
const KEY_STORE = "optik-api-key";

function storedKey() {
  if (state.key) return state.key;
  try { return sessionStorage.getItem(KEY_STORE); } catch (_) { return null; }  // storage blocked: memory only
}

function keepKey(key) {
  state.key = key;
  try {
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
  } catch (_) { /* storage blocked: memory only */ }
}

function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askKey(message) {
  keepKey(null);
  $("auth-text").textContent = message;
  $("auth").hidden = false;
  setState("locked");
  $("api-key").focus();
}

function setState(s) { document.body.dataset.state = s; }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

// --- model info and health ------------------------------------------------------------------
async function loadInfo() {
  try {
    const res = await fetch("/info", { headers: authHeaders() });
    if (res.status === 401) {
      askKey(storedKey() ? "That key was not accepted: enter the server's API key." : "This server needs an API key.");
      return;
    }
    if (!res.ok) throw new Error(await errorText(res));
    $("auth").hidden = true;
    const info = await res.json();
    state.info = info;
    const task = info.subtask ? `${info.task} · ${info.subtask}` : info.task;
    $("info-task").textContent = task;
    $("info-model").textContent = info.model;
    $("info-model").title = info.weights;
    $("info-format").textContent = info.format;
    $("info-classes").textContent = String(info.classes.length);
    $("info-classes").title = info.classes.join(", ");
    $("info-imgsz").textContent = `${info.imgsz} px`;
    document.title = `optik serve · ${info.model} (${task})`;
    const specs = info.control_specs || {};
    for (const name of info.controls) if (!$(name)) addControl(name, specs[name]);  // a control this page has no slider for
    for (const box of document.querySelectorAll(".control")) {
      const name = box.dataset.control;
      const input = $(name);
      const used = info.controls.includes(name);
      box.classList.toggle("off", !used);
      input.disabled = !used;
      if (specs[name] && specs[name].kind !== "list") applySpec(input, specs[name]);
      const initial = info.defaults[name];
      if (initial !== undefined && initial !== null) input.value = Array.isArray(initial) ? initial.join(", ") : String(initial);
      showValue(name);
    }
    setState("ready");
    if (state.file) predict();
  } catch (err) {
    showError("Cannot load the model info", err.message);
    setState("error");
  }
}

async function pollHealth() {
  const box = $("health");
  try {
    const res = await fetch("/health", { cache: "no-store" });
    const h = await res.json();
    box.className = "health ok";
    $("health-text").textContent = h.pending ? `online · ${h.pending} busy` : "online";
  } catch (err) {
    box.className = "health down";
    $("health-text").textContent = "offline";
  }
}

// --- input ----------------------------------------------------------------------------------
// A control's range comes from the task (/info control_specs): the slider's end may sit below the API's
// maximum (top-k: the class count), and an exclusive minimum starts one step above it.
function applySpec(input, spec) {
  const step = Number(spec.step);
  input.step = String(step);
  input.min = String(spec.min_exclusive ? Number(spec.min) + step : Number(spec.min));
  input.max = String(spec.slider_max !== null && spec.slider_max !== undefined ? spec.slider_max : spec.max);
}

function addControl(name, spec) {
  const box = el("div", null, "control");
  box.dataset.control = name;
  const label = el("label", `${(spec && spec.label) || name} `);
  label.htmlFor = name;
  const out = el("output", null);
  out.id = `${name}-value`;
  label.append(out);
  const input = el("input");
  // A list control (zero-shot labels): a comma-separated text box, sent as one query parameter.
  const list = spec && spec.kind === "list";
  input.type = list ? "text" : "range";
  input.id = name;
  if (list) {
    box.classList.add("text-control");
    input.placeholder = spec.choices ? spec.choices.join(", ") : "cat, dog, bird";
    input.autocomplete = "off";
    input.spellcheck = false;
  }
  box.append(label, input);
  if (spec && spec.hint) box.append(el("small", spec.hint, "hint"));
  document.querySelector(".controls").append(box);
  input.addEventListener("input", () => { showValue(name); schedulePredict(list ? 600 : 200); });
}

function showValue(name) {
  const input = $(name);
  if (input.type === "text") {  // a list: how many entries
    const n = input.value.split(",").filter((t) => t.trim()).length;
    $(`${name}-value`).textContent = n ? `(${n})` : "";
    return;
  }
  const v = Number(input.value);
  $(`${name}-value`).textContent = Number.isInteger(Number(input.step)) ? String(v) : v.toFixed(2);
}

function setFile(file) {
  if (!file) return;
  state.file = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").hidden = true;
  $("filename").textContent = `${file.name || "pasted image"} · ${(file.size / 1024).toFixed(1)} KB`;
  $("predict").disabled = false;
  predict();
}

function schedulePredict(delay = 200) {
  clearTimeout(state.timer);
  if (state.file) state.timer = setTimeout(predict, delay);
}

// --- request ----------------------------------------------------------------------------------
async function errorText(res) {
  let detail = res.statusText;
  try {
    const body = await res.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) { /* not JSON: keep the status text */ }
  return `${res.status} ${res.statusText || ""}: ${detail}`.replace(" :", ":");
}

async function predict() {
  if (!state.file || !state.info) return;
  const seq = ++state.seq;  // answers to older requests (slider dragged on) are dropped
  const params = new URLSearchParams({ overlay: "true" });
  for (const name of state.info.controls) {
    const value = $(name).value;
    if ($(name).type !== "text" || value.trim()) params.set(name, value);  // an empty list: the server's default
  }
  const form = new FormData();
  form.append("file", state.file, state.file.name || "image.png");
  setState("busy");
  $("predict-label").textContent = "Predicting…";
  try {
    const res = await fetch(`/predict?${params}`, { method: "POST", body: form, headers: authHeaders() });
    if (seq !== state.seq) return;
    if (res.status === 401) {  // the key changed on the server, or this tab's key was wrong
      askKey("The server refused the API key: enter it again.");
      return;
    }
    if (!res.ok) throw new Error(await errorText(res));
    render(await res.json());
    hideError();
    setState("done");
  } catch (err) {
    if (seq !== state.seq) return;
    const msg = err instanceof TypeError ? "cannot reach the server (is optik serve still running?)" : err.message;
    clearResult();  // an older result next to this error would describe another image or other settings
    showError("Prediction failed", msg);
    setState("error");
  } finally {
    if (seq === state.seq) $("predict-label").textContent = "Predict";
  }
}

// --- output ------------------------------------------------------------------------------------
function showError(title, message) {
  const box = $("error");
  box.replaceChildren(el("strong", title), el("span", message));
  box.hidden = false;
}

function hideError() { $("error").hidden = true; }

function clearResult() {
  $("overlay").hidden = true;
  $("overlay").removeAttribute("src");
  $("placeholder").hidden = false;
  $("summary").textContent = "";
  for (const id of ["timings", "results-table", "raw"]) $(id).hidden = true;
  $("results-body").replaceChildren();
}

const fmt = {
  conf: (v) => Number(v).toFixed(3),
  box: (b) => [b.x1, b.y1, b.x2, b.y2].map((v) => Number(v).toFixed(1)).join(", "),
  int: (v) => Number(v).toLocaleString("en-US"),
};

function classCell(row) {
  const td = el("td");
  const sw = el("span", null, "swatch");
  const colors = state.info.colors || [];
  const color = colors[row.class];
  if (color) sw.style.background = color;
  else sw.classList.add("hollow");  // drawn untinted in the overlay (a semantic "background")
  td.append(sw, el("span", row.name));
  return td;
}

function confCell(v) {
  const td = el("td", null, "conf");
  const track = el("span", null, "track");
  const fill = el("span", null, "fill");
  fill.style.width = `${Math.round(100 * Math.min(Math.max(Number(v), 0), 1))}%`;
  track.append(fill);
  td.append(track, el("span", fmt.conf(v)));
  return td;
}

// Thumbnails (32–64 px inputs) are scaled up with crisp pixels instead of a blur.
function markSmall(img) {
  img.onload = () => img.classList.toggle("small", img.naturalWidth < 320);
}

// Columns per kind of prediction row (decided from the rows' keys, so every task renders).
function columns(data) {
  const rows = data.predictions;
  const pixels = data.shape[0] * data.shape[1] || 1;
  const has = (k) => rows.some((r) => k in r);
  const cols = [{ title: "#", cls: "narrow", cell: (r, i) => el("td", i + 1, "rank") }];
  if (has("id")) cols.push({ title: "Segment", cell: (r) => el("td", r.id, "num") });
  cols.push({ title: "Class", cell: classCell });
  if (has("isthing")) cols.push({ title: "Kind", cell: (r) => el("td", r.isthing ? "thing" : "stuff") });
  if (has("confidence")) cols.push({ title: "Confidence", cell: (r) => ("confidence" in r ? confCell(r.confidence) : el("td", "–", "num")) });
  if (has("box")) cols.push({ title: "Box (x1, y1, x2, y2)", cell: (r) => el("td", fmt.box(r.box), "num") });
  if (has("pixels")) {
    cols.push({ title: "Pixels", cell: (r) => el("td", fmt.int(r.pixels), "num") });
    cols.push({ title: "Share", cell: (r) => el("td", `${((100 * r.pixels) / pixels).toFixed(1)}%`, "num") });
  }
  if (has("area") && !has("pixels")) cols.push({ title: "Area (px)", cell: (r) => el("td", fmt.int(r.area), "num") });
  return cols;
}

function render(data) {
  const overlay = $("overlay");
  if (data.overlay) {
    overlay.src = data.overlay;
    overlay.hidden = false;
    $("placeholder").hidden = true;
  }
  $("summary").textContent = data.summary || "";

  const t = data.timings || {};
  const chips = [["inference", t.inference], ["preprocess", t.preprocess], ["postprocess", t.postprocess],
    ["decode", t.decode], ["server total", t.total]];
  $("timings").replaceChildren(...chips.filter(([, v]) => v !== undefined).map(([k, v]) => el("span", `${k} ${Number(v).toFixed(1)} ms`)));
  $("timings").hidden = false;

  const table = $("results-table");
  const cols = columns(data);
  $("results-head").replaceChildren(...cols.map((c) => el("th", c.title, c.cls)));
  const body = $("results-body");
  if (data.predictions.length === 0) {
    const td = el("td", state.info.empty || "nothing found", "empty");
    td.colSpan = cols.length;
    const tr = el("tr", null, "empty-row");
    tr.append(td);
    body.replaceChildren(tr);
  } else {
    body.replaceChildren(...data.predictions.map((r, i) => {
      const tr = el("tr");
      tr.append(...cols.map((c) => c.cell(r, i)));
      return tr;
    }));
  }
  table.hidden = false;

  const shown = { ...data };
  delete shown.overlay;  // a long data: URL helps nobody in the JSON view
  $("raw-json").textContent = JSON.stringify(shown, null, 2);
  $("raw").hidden = false;
}

// --- wiring ---------------------------------------------------------------------------------------
function init() {
  $("origin").textContent = window.location.origin;
  markSmall($("preview"));
  $("preview").addEventListener("error", () => {  // the browser cannot show it either: keep the drop hint
    $("preview").hidden = true;
    $("drop-text").hidden = false;
  });
  markSmall($("overlay"));
  $("file").addEventListener("change", (e) => setFile(e.target.files[0]));
  const zone = $("dropzone");
  for (const ev of ["dragenter", "dragover"]) zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("dragover"); });
  for (const ev of ["dragleave", "drop"]) zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("dragover"); });
  zone.addEventListener("drop", (e) => setFile(e.dataTransfer.files[0]));
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
    if (item) setFile(item.getAsFile());
  });
  for (const box of document.querySelectorAll(".control")) {
    const name = box.dataset.control;
    $(name).addEventListener("input", () => { showValue(name); schedulePredict(); });
  }
  $("predict").addEventListener("click", predict);
  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    keepKey(key);
    $("api-key").value = "";
    $("auth").hidden = true;
    setState("loading");
    loadInfo();
  });
  loadInfo();
  pollHealth();
  setInterval(pollHealth, 5000);
}

document.addEventListener("DOMContentLoaded", init);
