// The page of c2am-tf export-web: photos in, the foreground map, box and mask out, all in this browser (LiteRT.js).
// The resize and the box rule are the device side's (c2am_rules.js, checked against numpy); the records are
// c2am_tf.boxes/v1, as c2am-tf predict and detect write them.
import {loadAndCompile, loadLiteRt, Tensor} from "@litertjs/core";
import {boxFromMap, foregroundMask, resizeRgb, scaleBox} from "./c2am_rules.js";

const status = document.getElementById("status");
const results = document.getElementById("results");
const records = [];
window.c2am = {records, errors: [], done: 0, ready: false, ms: []};  // read by tests/test_web_browser.py

function say(text, error = false) {
  status.textContent = text;
  status.className = error ? "error" : "";
}

const config = await (await fetch("config.json")).json();
document.getElementById("model").textContent = `${config.model} (${config.quantize}, ${config.size} px)`;
let model;
try {
  await loadLiteRt(config.wasm, {threads: self.crossOriginIsolated});
  model = await loadAndCompile("model.tflite", {accelerator: "wasm"});
  window.c2am.ready = true;
  say(`Ready (${self.crossOriginIsolated ? "threads" : "one thread"}): choose or drop photos.`);
} catch (err) {
  say(`The model could not be loaded: ${err}`, true);
  window.c2am.errors.push(String(err));
}

async function pixels(file) {
  const bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return {canvas, rgb, width: bitmap.width, height: bitmap.height};
}

async function foregroundMap(rgb, width, height) {
  const size = config.size;
  const input = new Tensor(resizeRgb(rgb, height, width, size, size), [1, size, size, 3]);
  const start = performance.now();
  const outputs = await model.run(input);
  const output = await outputs[0].moveTo("wasm");
  const raw = output.toTypedArray();
  window.c2am.ms.push(performance.now() - start);
  input.delete(); output.delete();
  for (const t of outputs) t.delete();
  const [scale, zero] = config.output_quantization;
  const map = new Float32Array(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const v = scale ? (raw[i] - zero) * scale : raw[i];
    map[i] = Math.min(Math.max(v, 0), 1);
  }
  return map;
}

function draw(canvas, map, mask, h, w, box, showMask) {
  const context = canvas.getContext("2d");
  const heat = document.createElement("canvas");
  heat.width = w; heat.height = h;
  const image = heat.getContext("2d").createImageData(w, h);
  for (let i = 0; i < map.length; i++) {
    image.data[4 * i] = 255 * map[i]; image.data[4 * i + 1] = 64; image.data[4 * i + 2] = 255 * (1 - map[i]);
    image.data[4 * i + 3] = showMask ? (mask[i] ? 150 : 40) : 110;
  }
  heat.getContext("2d").putImageData(image, 0, 0);
  context.imageSmoothingEnabled = true;
  context.drawImage(heat, 0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#0f0";
  context.lineWidth = Math.max(2, canvas.width / 200);
  context.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
}

async function detect(file) {
  const {canvas, rgb, width, height} = await pixels(file);
  const map = await foregroundMap(rgb, width, height);
  const [h, w] = config.map_size;
  const mapBox = boxFromMap(map, h, w, config.thresholds);
  let score = 0;
  if (mapBox.some((v) => v !== 0)) {  // the mean map value in the box, as detect's score
    const [x0, y0, x1, y1] = mapBox.map(Math.trunc);
    let sum = 0, n = 0;
    for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) { sum += map[y * w + x]; n++; }
    score = sum / n;
  }
  const mask = foregroundMask(map, config.threshold);
  const fraction = mask.reduce((a, b) => a + b, 0) / mask.length;
  const box = scaleBox(mapBox, w, h, width, height);
  draw(canvas, map, mask, h, w, box, document.getElementById("show-mask").checked);
  const round = (v, d) => Math.round(v * 10 ** d) / 10 ** d;
  records.push({path: file.name, width, height, box: box.map((v) => round(v, 2)),
                foreground_fraction: round(fraction, 4), score: round(score, 4)});
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = `${file.name}: box ${box.map((v) => v.toFixed(0)).join(", ")}`;
  figure.append(canvas, caption);
  results.append(figure);
}

async function run(files) {
  if (!window.c2am.ready) return;
  let failed = 0;
  for (const file of files) {
    try {
      say(`Detecting ${file.name}...`);
      await detect(file);
    } catch (err) {  // a file that is no image: said on the page, the others go on
      failed++;
      window.c2am.errors.push(`${file.name}: ${err}`);
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = `${file.name}: not an image this browser can read (${err.name || err})`;
      results.append(p);
    }
    window.c2am.done++;
  }
  document.getElementById("download").disabled = !records.length;
  say(`${records.length} images done` + (failed ? `, ${failed} could not be read` : "") + ".", failed > 0);
}

document.getElementById("files").addEventListener("change", (e) => run([...e.target.files]));
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); run([...e.dataTransfer.files]); });
document.getElementById("download").addEventListener("click", () => {
  const header = {format: "c2am_tf.boxes/v1", model: config.model, threshold: config.threshold, size: config.size};
  if (config.box_band) header.box_band = config.box_band;
  const blob = new Blob([JSON.stringify({...header, images: records}, null, 1)], {type: "application/json"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "boxes.json";
  link.click();
});
