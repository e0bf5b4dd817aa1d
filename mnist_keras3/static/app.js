// The drawing page: strokes on a canvas (or, for a model of other pictures than digits, an uploaded
// file) -> POST /api/predict -> class name, bars, the input the model saw. /api/model names the classes.
// Plain browser JavaScript, no libraries and no build step; everything comes from this server.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const seen = document.getElementById("seen");
const result = document.getElementById("result");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const bars = document.getElementById("bars");
const timingEl = document.getElementById("timing");

// MNIST strokes are about 0.13 of a digit's height (measured on the training set); a digit drawn
// about 200 px tall on this 280 px pad gets that ratio with a 24 px pen.
const PEN = 24 * pad.width / 280;

let strokes = 0;        // finished strokes since the last clear
let generation = 0;     // bumped by Clear: answers to older requests are dropped
let drawing = false;
let last = null;
let inFlight = false;   // one request at a time; a newer drawing waits in `pending`
let pending = false;

function blank() {
  ctx.fillStyle = "#fff";  // dark ink on white paper, as people write; the server inverts it
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width,
           y: (event.clientY - box.top) * pad.height / box.height };
}

function segment(a, b) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = PEN;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(b.x, b.y);
  ctx.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = point(event);
  segment(last, last);  // a tap leaves a dot
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const p = point(event);
  segment(last, p);
  last = p;
  predictSoon();  // live feedback while drawing (at most one request in flight)
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  strokes += 1;
  predictSoon();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  blank();
  strokes = 0;
  generation += 1;
  pending = false;
  result.dataset.strokes = "0";
  digitEl.textContent = "–";
  showMessage("draw something", false);
  drawBars(null);
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
  timingEl.textContent = "";
});

// The served model's classes and preprocessing (/api/model); MNIST's until it answers.
let classNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let digitModel = true;

function predictSoon() {
  if (inFlight) { pending = true; return; }
  if (strokes === 0 && !drawing) return;
  predict();
}

async function predict(file) {
  inFlight = true;
  pending = false;
  const sentGeneration = generation;
  const sentStrokes = strokes;  // finished strokes only: a request during stroke n says n-1
  try {
    const blob = file || await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const form = new FormData();
    form.append("image", blob, file ? file.name : "drawing.png");
    const response = await fetch("/api/predict", { method: "POST", body: form });
    const body = await response.json();
    if (sentGeneration !== generation) return;  // cleared meanwhile
    if (!response.ok) {
      showMessage(body.error || `error ${response.status}`, true);
    } else {
      show(body);
    }
    result.dataset.strokes = String(sentStrokes);  // tests wait on this: the answer for these strokes is shown
  } catch (error) {
    showMessage(`no answer from the server (${error.message})`, true);
  } finally {
    inFlight = false;
    if (pending) predictSoon();
  }
}

function showMessage(text, isError) {
  confidenceEl.textContent = text;
  confidenceEl.classList.toggle("error", isError);
}

function show(body) {
  digitEl.textContent = String(body.label ?? body.digit);
  showMessage(`probability ${(100 * body.probability).toFixed(1)}%`, false);
  drawBars(body.probabilities, body.class ?? body.digit);
  drawSeen(body.input);
  const ms = body.milliseconds;
  timingEl.textContent = `preprocessing ${ms.preprocess.toFixed(1)} ms, inference ${ms.inference.toFixed(1)} ms (${body.backend})`;
}

function drawBars(probabilities, top) {
  bars.replaceChildren();
  for (let d = 0; d < classNames.length; d++) {
    const p = probabilities ? probabilities[d] : 0;
    const li = document.createElement("li");
    if (probabilities && d === top) li.className = "top";
    li.innerHTML = `<span>${escape(classNames[d])}</span><span class="bar"><span class="fill"></span></span><span class="p"></span>`;
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".p").textContent = probabilities ? `${(100 * p).toFixed(1)}%` : "";
    bars.appendChild(li);
  }
}

function drawSeen(input) {  // input: H rows of W values in [0, 1] (grayscale) or of [r, g, b] (RGB)
  const h = input.length, w = input[0].length;
  if (seen.width !== w || seen.height !== h) { seen.width = w; seen.height = h; }
  const c = seen.getContext("2d");
  const image = c.createImageData(w, h);
  for (let r = 0; r < h; r++) {
    for (let col = 0; col < w; col++) {
      const px = input[r][col];
      const rgb = Array.isArray(px) ? px : [px, px, px];
      const i = 4 * (w * r + col);
      for (let k = 0; k < 3; k++) image.data[i + k] = Math.round(255 * rgb[k]);
      image.data[i + 3] = 255;
    }
  }
  c.putImageData(image, 0, 0);
}

function useClasses(info) {  // a model of other pictures than digits: its class names and an upload area
  const before = classNames.join("\n");
  if (Array.isArray(info.class_names)) classNames = info.class_names.map(String);
  digitModel = info.preprocessing === "mnist-digit";
  if (!digitModel) {
    const [h, w, c] = info.input_shape;
    document.getElementById("title").textContent = "Draw or upload a picture";
    document.title = "mnist-keras3: classify a picture";
    document.getElementById("pad-hint").textContent = `classes: ${classNames.join(", ")}`;
    document.getElementById("seen-hint").textContent =
      `${h}\u00d7${w} ${c === 1 ? "grayscale" : "RGB"}, the picture resized to the model's input.`;
    document.getElementById("upload-card").hidden = false;
  }
  // Only when the classes differ from the digits drawn at start: an answer already shown stays.
  if (classNames.join("\n") !== before) drawBars(null);
}

document.getElementById("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) predict(file);
});

async function describeModel() {
  const served = document.getElementById("served");
  try {
    const info = await (await fetch("/api/model")).json();
    useClasses(info);
    const run = info.run || {};
    let accuracy = run.test_accuracy != null
      ? `test accuracy <b>${(100 * run.test_accuracy).toFixed(2)}%</b>` : "no test figures (no metrics.json beside the model)";
    if (run.trained_under && run.trained_under !== info.backend) {
      accuracy += ` (trained under ${escape(run.trained_under)})`;  // a .keras file runs under any backend
    }
    served.innerHTML = `model <b>${escape(info.model_name)}</b> (${info.parameters.toLocaleString("en")} parameters, `
      + `${escape(info.model_file)}) · backend <b>${escape(info.backend)}</b> ${escape(info.backend_version)} `
      + `on ${escape(info.device)} · ${escape(info.dataset || "mnist")}, ${classNames.length} classes · ${accuracy}`;
  } catch (error) {
    served.textContent = `cannot reach the server (${error.message})`;
  }
}

function escape(text) {
  const span = document.createElement("span");
  span.textContent = String(text);
  return span.innerHTML;
}

blank();
drawBars(null);
describeModel();
