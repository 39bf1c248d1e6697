// The device side's rules (c2am_tf/deploy/on_device.py) in JavaScript, for the web page (c2am-tf export-web):
// the resize every image gets before the model (resize_rgb: TensorFlow's antialiased bilinear filter, float32
// arithmetic step for step, numpy's pairwise sums and round-half-even) and the box rule (box_from_map: the
// largest region's outer contour, as the authors' OpenCV code). tests/test_web.py checks both against numpy.

const f32 = Math.fround;

// numpy's pairwise sum of a float64 row (what weights.sum(axis=1) does), so the normalized weights are numpy's
function pairwiseSum(a, start, n) {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res += a[start + i];
    return res;
  }
  if (n <= 128) {
    const r = a.slice(start, start + 8);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[start + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, start, n2) + pairwiseSum(a, start + n2, n - n2);
}

// (indices, float32 weights), each sizeOut x taps, of TensorFlow's antialiased bilinear resize along one axis
function triangleTaps(sizeIn, sizeOut) {
  const scale = sizeOut / sizeIn;
  const kernelScale = Math.min(scale, 1.0);
  const taps = Math.ceil(2.0 / kernelScale) + 1;
  const indices = new Int32Array(sizeOut * taps);
  const raw = new Float64Array(sizeOut * taps);
  const weights = new Float32Array(sizeOut * taps);
  for (let o = 0; o < sizeOut; o++) {
    const centre = (o + 0.5) / scale;
    const first = Math.min(Math.max(Math.floor(centre - 1.0 / kernelScale + 0.5), 0), sizeIn - 1);
    for (let k = 0; k < taps; k++) {
      const index = first + k;
      raw[o * taps + k] = index >= sizeIn ? 0.0 : Math.max(0.0, 1.0 - Math.abs((index + 0.5 - centre) * kernelScale));
      indices[o * taps + k] = Math.min(index, sizeIn - 1);
    }
    const sum = pairwiseSum(raw, o * taps, taps);
    for (let k = 0; k < taps; k++) weights[o * taps + k] = f32(raw[o * taps + k] / sum);
  }
  return { indices, weights, taps };
}

// float32 (rows, cols, channels) -> (sizeOut, cols, channels) along the first axis
function resampleRows(array, rows, cols, channels, sizeOut) {
  const { indices, weights, taps } = triangleTaps(rows, sizeOut);
  const line = cols * channels;
  const out = new Float32Array(sizeOut * line);
  for (let o = 0; o < sizeOut; o++) {
    for (let k = 0; k < taps; k++) {
      const w = weights[o * taps + k];
      const src = indices[o * taps + k] * line;
      const dst = o * line;
      if (k === 0) for (let i = 0; i < line; i++) out[dst + i] = f32(array[src + i] * w);
      else for (let i = 0; i < line; i++) out[dst + i] = f32(out[dst + i] + f32(array[src + i] * w));
    }
  }
  return out;
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

// uint8 RGB (height x width x 3, row-major) -> uint8 (outHeight x outWidth x 3): numpy's resize_rgb
export function resizeRgb(rgb, height, width, outHeight, outWidth) {
  if (height === outHeight && width === outWidth) return Uint8Array.from(rgb);
  const rows = resampleRows(Float32Array.from(rgb), height, width, 3, outHeight);
  const transposed = new Float32Array(rows.length);  // (outHeight, width, 3) -> (width, outHeight, 3)
  for (let y = 0; y < outHeight; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) transposed[(x * outHeight + y) * 3 + c] = rows[(y * width + x) * 3 + c];
  const cols = resampleRows(transposed, width, outHeight, 3, outWidth);  // (outWidth, outHeight, 3)
  const out = new Uint8Array(outHeight * outWidth * 3);
  for (let y = 0; y < outHeight; y++)
    for (let x = 0; x < outWidth; x++)
      for (let c = 0; c < 3; c++)
        out[(y * outWidth + x) * 3 + c] = Math.min(Math.max(roundHalfEven(cols[(x * outHeight + y) * 3 + c]), 0), 255);
  return out;
}

// pixels strictly above int(t * peak) of the map clipped to [0, 1] and truncated to uint8 (float32 product)
export function foregroundMask(map, threshold) {
  const image = new Uint8Array(map.length);
  let peak = 0;
  for (let i = 0; i < map.length; i++) {
    image[i] = Math.trunc(f32(Math.min(Math.max(map[i], 0), 1) * 255));
    if (image[i] > peak) peak = image[i];
  }
  const cut = Math.trunc(threshold * peak);
  const mask = new Uint8Array(map.length);
  for (let i = 0; i < map.length; i++) mask[i] = image[i] > cut ? 1 : 0;
  return mask;
}

// 8-connected components, in raster order of their first pixel: arrays of pixel indices
function components(mask, h, w) {
  const seen = new Uint8Array(mask.length);
  const found = [];
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || seen[start]) continue;
    const pixels = [start];
    seen[start] = 1;
    for (let head = 0; head < pixels.length; head++) {
      const y = Math.floor(pixels[head] / w), x = pixels[head] % w;
      for (let dy = -1; dy <= 1; dy++)
        for (let dx = -1; dx <= 1; dx++) {
          const yy = y + dy, xx = x + dx;
          if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
          const j = yy * w + xx;
          if (mask[j] && !seen[j]) { seen[j] = 1; pixels.push(j); }
        }
    }
    found.push(pixels);
  }
  return found;
}

// the area of the polygon through the outer boundary pixels' centres of a component with its holes filled
function contourArea(pixels, h, w) {
  const inside = new Uint8Array(h * w);
  for (const p of pixels) inside[p] = 1;
  const outside = new Uint8Array(h * w);  // what the 4-connected outside reaches
  const queue = [];
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      if ((y === 0 || y === h - 1 || x === 0 || x === w - 1) && !inside[y * w + x]) {
        outside[y * w + x] = 1; queue.push(y * w + x);
      }
  for (let head = 0; head < queue.length; head++) {
    const y = Math.floor(queue[head] / w), x = queue[head] % w;
    for (const [dy, dx] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) {
      const yy = y + dy, xx = x + dx;
      if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
      const j = yy * w + xx;
      if (!inside[j] && !outside[j]) { outside[j] = 1; queue.push(j); }
    }
  }
  let filled = 0, boundary = 0;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      if (outside[y * w + x]) continue;
      filled++;
      const edge = [[-1, 0], [1, 0], [0, -1], [0, 1]].some(([dy, dx]) => {
        const yy = y + dy, xx = x + dx;
        return yy < 0 || yy >= h || xx < 0 || xx >= w || outside[yy * w + xx];
      });
      if (edge) boundary++;
    }
  return Math.max(filled - boundary / 2.0 - 1.0, 0.0);
}

function boxAt(map, h, w, threshold) {
  const mask = foregroundMask(map, threshold);
  const parts = components(mask, h, w);
  if (!parts.length) return [0, 0, 0, 0];
  const order = parts.map((_, i) => i).sort((a, b) => (parts[b].length - parts[a].length) || (a - b));
  let best = -1, bestArea = -1.0;
  for (const index of order) {
    if (parts[index].length <= bestArea) break;
    const area = contourArea(parts[index], h, w);
    if (area > bestArea || (area === bestArea && index > best)) { best = index; bestArea = area; }
  }
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (const p of parts[best]) {
    const y = Math.floor(p / w), x = p % w;
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
  }
  return [x0, y0, Math.min(x1 + 1, w - 1), Math.min(y1 + 1, h - 1)];
}

// box [x0, y0, x1, y1] in map pixels (float32 values) of a map (h x w): numpy's box_from_map, its band given as
// the thresholds it averages (geometry.band_thresholds, computed by the exporter)
export function boxFromMap(map, h, w, thresholds) {
  const boxes = thresholds.map((t) => boxAt(map, h, w, t));
  const box = [0, 0, 0, 0];
  for (let k = 0; k < 4; k++) {
    let sum = 0;
    for (const b of boxes) sum = f32(sum + b[k]);
    box[k] = f32(sum / boxes.length);
  }
  return box;
}

// a box in a (fromW x fromH) frame -> the (toW x toH) frame, as geometry.scale_box (float64, then float32)
export function scaleBox(box, fromW, fromH, toW, toH) {
  const s = [toW / fromW, toH / fromH, toW / fromW, toH / fromH];
  return box.map((v, k) => f32(v * s[k]));
}
