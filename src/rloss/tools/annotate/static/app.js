// rloss annotate: the page. Strokes are kept as vectors in image pixel units ({class, radius,
// points: [[x, y], ...]}, class null = eraser) on top of the saved scribbles ("base", run-length);
// the server rasterizes them, computes the dense mask and saves both (see server.py / strokes.py).
"use strict";

const $ = (id) => document.getElementById(id);
const MASK_DELAY_MS = 250; // debounce of the dense-mask request after the strokes change

const state = {
  classes: [], images: [], checkpoint: false,
  id: null, width: 0, height: 0, base: null,
  strokes: [], redo: [], current: null,
  tool: 0, radius: 6, // class id or "eraser"; brush radius in image px
  scale: 1, tx: 0, ty: 0, pan: null, space: false,
  seq: 0, shown: 0, maskTimer: null, maskAbort: null, dirty: false, lastError: null, saving: false,
};
window.annot = state; // for tests and debugging

function message(text, isError) {
  const box = $("message");
  box.textContent = text || "";
  box.classList.toggle("error", Boolean(isError));
  state.lastError = isError ? text : null;
}

async function api(path, body, signal) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  };
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (error) { data = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

// ---- classes, images, progress ----
function buildClasses() {
  const box = $("classes");
  box.textContent = "";
  state.classes.forEach((c, i) => {
    const button = document.createElement("button");
    button.className = "class-button";
    button.dataset.classId = c.id;
    button.title = `${c.name} (class ${c.id})`;
    const key = i < 10 ? `<kbd>${(i + 1) % 10}</kbd>` : "";
    button.innerHTML = `${key}<span class="swatch" style="background:${c.color}"></span>`;
    button.append(document.createTextNode(c.name));
    button.addEventListener("click", () => selectTool(c.id));
    box.append(button);
  });
  selectTool(state.classes.length > 1 ? 1 : 0);
}

function selectTool(tool) {
  state.tool = tool;
  for (const button of document.querySelectorAll(".class-button")) {
    button.classList.toggle("active", Number(button.dataset.classId) === tool);
  }
  $("eraser").classList.toggle("active", tool === "eraser");
}

function showProgress(data) {
  state.images = data.images;
  $("progress").textContent = `${data.done} / ${data.total} done`;
  const list = $("images");
  list.textContent = "";
  for (const image of data.images) {
    const item = document.createElement("li");
    item.textContent = image.id;
    item.dataset.id = image.id;
    item.classList.toggle("done", image.done);
    item.classList.toggle("current", image.id === state.id);
    item.addEventListener("click", () => openImage(image.id));
    list.append(item);
  }
}

function nextUnlabelled() {
  const images = state.images;
  const start = Math.max(0, images.findIndex((image) => image.id === state.id));
  for (let k = 1; k <= images.length; k++) {
    const image = images[(start + k) % images.length];
    if (!image.done && image.id !== state.id) return openImage(image.id);
  }
  message("every image has saved scribbles");
}

// ---- opening an image ----
async function openImage(id) {
  if (state.dirty && !window.confirm("Discard the strokes not saved?")) return;
  let info;
  try { info = await api(`/api/images/${encodeURIComponent(id)}`); } catch (error) { message(error.message, true); return; }
  state.id = id; state.width = info.width; state.height = info.height; state.base = info.base;
  state.strokes = []; state.redo = []; state.current = null; state.dirty = false;
  const canvas = $("strokes");
  canvas.width = info.width; canvas.height = info.height;
  for (const element of [$("photo"), $("overlay"), canvas]) {
    element.style.width = `${info.width}px`; element.style.height = `${info.height}px`;
  }
  $("overlay").removeAttribute("src");
  await new Promise((resolve) => {
    const photo = $("photo");
    photo.onload = resolve;
    photo.onerror = () => { message(`${id}: the image cannot be shown`, true); resolve(); };
    photo.src = `/api/images/${encodeURIComponent(id)}/display.png`;
  });
  for (const item of document.querySelectorAll("#images li")) item.classList.toggle("current", item.dataset.id === id);
  fit();
  render();
  message(`${id}: ${info.width} x ${info.height}, ${info.channels} channel(s)${info.done ? ", saved scribbles restored" : ""}`);
  if (info.done || state.checkpoint) requestMask(0);
}

// ---- drawing ----
function decodeBase(base) {
  const canvas = document.createElement("canvas");
  canvas.width = state.width; canvas.height = state.height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(state.width, state.height);
  const colors = state.classes.map((c) => [1, 3, 5].map((k) => parseInt(c.color.slice(k, k + 2), 16)));
  let offset = 0;
  for (let k = 0; k < base.length; k += 2) {
    const value = base[k], count = base[k + 1];
    if (value !== 255) {
      const [r, g, b] = colors[value];
      for (let p = offset; p < offset + count; p++) {
        pixels.data[4 * p] = r; pixels.data[4 * p + 1] = g; pixels.data[4 * p + 2] = b; pixels.data[4 * p + 3] = 255;
      }
    }
    offset += count;
  }
  context.putImageData(pixels, 0, 0);
  return canvas;
}

function drawStroke(context, stroke) {
  context.globalCompositeOperation = stroke.class === null ? "destination-out" : "source-over";
  const color = stroke.class === null ? "#000" : state.classes[stroke.class].color;
  context.strokeStyle = color; context.fillStyle = color;
  context.lineWidth = 2 * stroke.radius; context.lineCap = "round"; context.lineJoin = "round";
  const points = stroke.points;
  if (points.length === 1) {
    context.beginPath();
    context.arc(points[0][0], points[0][1], stroke.radius, 0, 2 * Math.PI);
    context.fill();
    return;
  }
  context.beginPath();
  context.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) context.lineTo(x, y);
  context.stroke();
}

function render() {
  const canvas = $("strokes");
  const context = canvas.getContext("2d");
  context.globalCompositeOperation = "source-over";
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (state.base) {
    if (!state.baseCanvas || state.baseCanvas.owner !== state.base) {
      state.baseCanvas = decodeBase(state.base);
      state.baseCanvas.owner = state.base;
    }
    context.drawImage(state.baseCanvas, 0, 0);
  }
  for (const stroke of state.strokes) drawStroke(context, stroke);
  if (state.current) drawStroke(context, state.current);
  context.globalCompositeOperation = "source-over";
  $("undo").disabled = state.strokes.length === 0;
  $("redo").disabled = state.redo.length === 0;
}

function imagePoint(event) {
  const box = $("viewport").getBoundingClientRect();
  return [(event.clientX - box.left - state.tx) / state.scale, (event.clientY - box.top - state.ty) / state.scale];
}

const clamp = (value, low, high) => Math.min(high, Math.max(low, value));
const round2 = (value) => Math.round(value * 100) / 100;

function strokePoint(event) {
  const [x, y] = imagePoint(event);
  return [round2(clamp(x, 0, state.width)), round2(clamp(y, 0, state.height))];
}

function changed() {
  state.dirty = true;
  render();
  requestMask(MASK_DELAY_MS);
}

function undo() {
  if (!state.strokes.length) return;
  state.redo.push(state.strokes.pop());
  changed();
}

function redo() {
  if (!state.redo.length) return;
  state.strokes.push(state.redo.pop());
  changed();
}

// ---- dense mask and saving ----
function requestBody() {
  return { base: state.base, strokes: state.strokes };
}

function requestMask(delay) {
  clearTimeout(state.maskTimer);
  state.seq += 1;
  const seq = state.seq, id = state.id;
  state.maskTimer = setTimeout(async () => {
    if (state.maskAbort) state.maskAbort.abort();
    const abort = new AbortController();
    state.maskAbort = abort;
    try {
      const data = await api(`/api/images/${encodeURIComponent(id)}/mask`, requestBody(), abort.signal);
      if (seq !== state.seq || id !== state.id) return;
      const overlay = $("overlay");
      if (data.mask) overlay.src = data.mask; else overlay.removeAttribute("src");
      overlay.dataset.seq = String(seq);
      state.shown = seq;
      message(data.mask ? `mask: ${data.seconds.toFixed(2)} s` : "draw strokes to see the mask");
    } catch (error) {
      if (error.name !== "AbortError" && seq === state.seq) message(error.message, true);
    }
  }, delay);
}

async function save() {
  if (!state.id || state.saving) return;
  state.saving = true;
  try {
    const data = await api(`/api/images/${encodeURIComponent(state.id)}/save`, requestBody());
    state.dirty = false;
    showProgress(data);
    message(`saved ${data.saved.join(" and ")}`);
    $("save").dataset.saved = String(Number($("save").dataset.saved || 0) + 1);
  } catch (error) {
    message(error.message, true);
  } finally {
    state.saving = false;
  }
}

// ---- view: zoom and pan ----
function applyView() {
  $("stage").style.transform = `translate(${state.tx}px, ${state.ty}px) scale(${state.scale})`;
}

function fit() {
  const box = $("viewport").getBoundingClientRect();
  if (!state.width || !box.width) return;
  state.scale = Math.min(box.width / state.width, box.height / state.height) * 0.98;
  state.tx = (box.width - state.width * state.scale) / 2;
  state.ty = (box.height - state.height * state.scale) / 2;
  applyView();
}

function zoom(factor, clientX, clientY) {
  const box = $("viewport").getBoundingClientRect();
  const cx = clientX === undefined ? box.width / 2 : clientX - box.left;
  const cy = clientY === undefined ? box.height / 2 : clientY - box.top;
  const scale = clamp(state.scale * factor, 0.05, 64);
  state.tx = cx - (cx - state.tx) * (scale / state.scale);
  state.ty = cy - (cy - state.ty) * (scale / state.scale);
  state.scale = scale;
  applyView();
}

function moveCursor(event) {
  const cursor = $("cursor");
  if (!state.id) { cursor.style.display = "none"; return; }
  const [x, y] = imagePoint(event);
  cursor.style.display = "block";
  cursor.style.left = `${x - state.radius}px`; cursor.style.top = `${y - state.radius}px`;
  cursor.style.width = cursor.style.height = `${2 * state.radius}px`;
  cursor.style.borderWidth = `${1 / state.scale}px`;
}

// ---- events ----
function setRadius(radius) {
  state.radius = clamp(Math.round(radius), 1, 60);
  $("brush").value = state.radius;
  $("brush-value").textContent = state.radius;
}

function bindEvents() {
  const viewport = $("viewport");
  viewport.addEventListener("contextmenu", (event) => event.preventDefault());
  viewport.addEventListener("pointerdown", (event) => {
    viewport.focus();
    if (event.button === 1 || event.button === 2 || (event.button === 0 && state.space)) {
      state.pan = { x: event.clientX - state.tx, y: event.clientY - state.ty };
      viewport.classList.add("panning");
    } else if (event.button === 0 && state.id) {
      const [x, y] = imagePoint(event);
      if (x < 0 || y < 0 || x > state.width || y > state.height) return;
      state.current = { class: state.tool === "eraser" ? null : state.tool, radius: state.radius, points: [strokePoint(event)] };
      render();
    } else {
      return;
    }
    viewport.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  viewport.addEventListener("pointermove", (event) => {
    moveCursor(event);
    if (state.pan) {
      state.tx = event.clientX - state.pan.x; state.ty = event.clientY - state.pan.y;
      applyView();
    } else if (state.current) {
      const point = strokePoint(event), last = state.current.points[state.current.points.length - 1];
      if (point[0] !== last[0] || point[1] !== last[1]) { state.current.points.push(point); render(); }
    }
  });
  const finish = () => {
    if (state.pan) { state.pan = null; viewport.classList.remove("panning"); }
    if (state.current) {
      state.strokes.push(state.current);
      state.current = null; state.redo = [];
      changed();
    }
  };
  viewport.addEventListener("pointerup", finish);
  viewport.addEventListener("pointercancel", finish);
  viewport.addEventListener("pointerleave", () => { $("cursor").style.display = "none"; });
  viewport.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoom(Math.pow(1.0015, -event.deltaY), event.clientX, event.clientY);
  }, { passive: false });
  window.addEventListener("resize", fit);

  $("eraser").addEventListener("click", () => selectTool("eraser"));
  $("brush").addEventListener("input", (event) => setRadius(Number(event.target.value)));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("fit").addEventListener("click", fit);
  $("zoom-in").addEventListener("click", () => zoom(1.25));
  $("zoom-out").addEventListener("click", () => zoom(0.8));
  $("opacity").addEventListener("input", (event) => { $("overlay").style.opacity = Number(event.target.value) / 100; });
  $("show-strokes").addEventListener("change", (event) => { $("strokes").style.display = event.target.checked ? "" : "none"; });
  $("save").addEventListener("click", save);
  $("next").addEventListener("click", nextUnlabelled);

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement && event.target.type !== "range" && event.target.type !== "checkbox") return;
    const key = event.key.toLowerCase();
    const control = event.ctrlKey || event.metaKey;
    if (control && key === "z") { event.preventDefault(); if (event.shiftKey) redo(); else undo(); }
    else if (control && key === "y") { event.preventDefault(); redo(); }
    else if (control && key === "s") { event.preventDefault(); save(); }
    else if (control || event.altKey) return;
    else if (/^[0-9]$/.test(key)) {
      const index = (Number(key) + 9) % 10; // 1 -> first class, 0 -> tenth
      if (index < state.classes.length) selectTool(state.classes[index].id);
    } else if (key === "e") selectTool("eraser");
    else if (key === "[") setRadius(state.radius - 1);
    else if (key === "]") setRadius(state.radius + 1);
    else if (key === "n") nextUnlabelled();
    else if (key === "f") fit();
    else if (key === "+" || key === "=") zoom(1.25);
    else if (key === "-") zoom(0.8);
    else if (key === " ") { state.space = true; event.preventDefault(); }
  });
  document.addEventListener("keyup", (event) => { if (event.key === " ") state.space = false; });
  window.addEventListener("beforeunload", (event) => { if (state.dirty) event.preventDefault(); });
}

async function start() {
  bindEvents();
  setRadius(Number($("brush").value));
  let data;
  try { data = await api("/api/session"); } catch (error) { message(error.message, true); return; }
  state.classes = data.classes;
  state.checkpoint = data.checkpoint;
  buildClasses();
  showProgress(data);
  const first = data.images.find((image) => !image.done) || data.images[0];
  if (first) await openImage(first.id);
  document.body.dataset.ready = "1";
}

start();
