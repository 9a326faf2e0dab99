// Face descriptors in the victim's browser, compatible with dlib's on the server
// (workers/faces.py: face_recognition, 5-point landmarks, 150 px chips, padding 0.25).
//
// face-api's recognition net is dlib's ResNet with dlib's weights; what differs is the crop.
// So we rebuild dlib's aligned chip here:
//   1. detect faces with SSD MobileNet (on a copy at most 512 px, the net's input size);
//   2. 68 landmarks on each face, from the full-resolution pixels: once on the detector's box,
//      then on a square around those landmarks, read straight and mirrored and averaged;
//   3. landmarks 45, 42, 36, 39, 33 stand in for dlib's five points (shape_predictor_5 order:
//      outer and inner corner of the eye on the image's right, outer and inner corner of the
//      eye on the image's left, bottom of the nose), moved down by face-api's measured offset
//      from dlib's points (LANDMARK_SHIFT_Y);
//   4. a similarity transform (least squares, Umeyama) from dlib's 5-point template, as
//      get_face_chip_details(det, size=150, padding=0.25) defines it, to those points;
//   5. dlib's extract_image_chips: a [1 4 6 4 1] pyramid while the face is much larger than
//      the chip, then bilinear sampling into the 150x150 chip (a port of dlib's arithmetic);
//   6. face-api's recognition net on the chip, with dlib's input scaling (x - mean) / 256.
// Nothing leaves the device; models and wasm are served from our own origin.
// Runs in a page or a Web Worker (inputs: HTMLImageElement, HTMLCanvasElement, ImageBitmap,
// OffscreenCanvas).

import * as faceapi from '../vendor/face-api/face-api.esm.js';

const tf = faceapi.tf;

export const CHIP_SIZE = 150;
export const CHIP_PADDING = 0.25;
// dlib's get_face_chip_details: mean positions of its five points in a unit face box.
const TEMPLATE_5 = [
  [0.8595674595992, 0.2134981538014],
  [0.6460604764104, 0.2289674387677],
  [0.1205750620789, 0.2137274526848],
  [0.3340850613712, 0.2290642403242],
  [0.4901123135679, 0.6277975316475],
];
export const FIVE_FROM_68 = [45, 42, 36, 39, 33];
const DETECT_SIZE = 512;          // SSD MobileNet's input size
const LANDMARK_SIZE = 112;        // the 68-point net's input size
const MIN_CONFIDENCE = 0.5;
// Second landmark pass: a square this many times the first landmarks' extent.
const LANDMARK_BOX = 1.2;
// Measured on the sample photos at two scales (leave-one-photo-out 0.030-0.037): face-api's
// eye corners and nose base sit this many inter-ocular distances above dlib's 5-point ones.
const LANDMARK_SHIFT_Y = 0.033;
const MAX_FACES = 100;
// dlib's input layer: (pixel - mean) / 256; face-api divides by 255, so we pre-scale.
const RGB_MEAN = [122.782, 117.001, 104.298];
const INPUT_RESCALE = 255 / 256;

let loading = null;

function wasmBaseUrl() {
  return new URL('../vendor/tfjs-wasm/', import.meta.url).href;
}

function ensureEnvironment() {
  // face-api sets itself up for pages; in a Web Worker it has no environment, so we give it
  // one built on OffscreenCanvas (we only ever hand it tensors).
  try {
    faceapi.env.getEnv();
    return;
  } catch (_) { /* a worker */ }
  class NoElement {}
  faceapi.env.setEnv({
    Canvas: globalThis.OffscreenCanvas || NoElement,
    CanvasRenderingContext2D: globalThis.OffscreenCanvasRenderingContext2D || NoElement,
    Image: NoElement,
    ImageData: globalThis.ImageData || NoElement,
    Video: NoElement,
    createCanvasElement: () => new OffscreenCanvas(1, 1),
    createImageElement: () => { throw new Error('no image elements in a worker'); },
    createVideoElement: () => { throw new Error('no video elements in a worker'); },
    fetch: (...args) => globalThis.fetch(...args),
    readFile: () => { throw new Error('no file system'); },
  });
}

async function selectBackend() {
  if (tf.getBackend() === 'wasm') return 'wasm';     // already set up by another module
  try {
    try {
      tf.setWasmPaths(wasmBaseUrl());
    } catch (err) {
      // only when the wasm backend was initialised before us: its paths are already set
    }
    if (await tf.setBackend('wasm')) {
      await tf.ready();
      return 'wasm';
    }
  } catch (err) {
    console.warn('faces: wasm backend unavailable, using cpu', err);
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return 'cpu';
}

/** Loads the three nets from `baseUrl` (the model folder) and the tfjs wasm backend. */
export async function loadFaceModels(baseUrl) {
  if (!loading) {
    loading = (async () => {
      ensureEnvironment();
      await selectBackend();
      const base = baseUrl
        ? new URL(baseUrl, globalThis.location ? globalThis.location.href : import.meta.url).href
        : new URL('../vendor/face-api/model/', import.meta.url).href;
      await Promise.all([
        faceapi.nets.ssdMobilenetv1.loadFromUri(base),
        faceapi.nets.faceLandmark68Net.loadFromUri(base),
        faceapi.nets.faceRecognitionNet.loadFromUri(base),
      ]);
    })();
    loading.catch(() => { loading = null; });
  }
  return loading;
}

/** The tfjs backend in use ('wasm', or 'cpu' when wasm failed). */
export function faceBackend() {
  return tf.getBackend();
}

// --- pixels --------------------------------------------------------------------------------

function sourceSize(input) {
  if (typeof HTMLImageElement !== 'undefined' && input instanceof HTMLImageElement) {
    return [input.naturalWidth, input.naturalHeight];
  }
  if (typeof HTMLVideoElement !== 'undefined' && input instanceof HTMLVideoElement) {
    return [input.videoWidth, input.videoHeight];
  }
  if (input && typeof input.width === 'number' && typeof input.height === 'number') {
    return [input.width, input.height];
  }
  throw new TypeError('describeFaces: expected an image, a canvas, an ImageBitmap or an OffscreenCanvas');
}

function makeCanvas(width, height) {
  if (typeof OffscreenCanvas !== 'undefined') return new OffscreenCanvas(width, height);
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

/** RGBA pixels of the source rectangle (sx, sy, sw, sh) drawn at dw x dh. */
function readPixels(input, sx, sy, sw, sh, dw, dh) {
  const canvas = makeCanvas(dw, dh);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(input, sx, sy, sw, sh, 0, 0, dw, dh);
  return ctx.getImageData(0, 0, dw, dh).data;
}

function rgbaToTensor(rgba, width, height) {
  const data = new Float32Array(width * height * 3);
  for (let i = 0, j = 0; i < data.length; i += 3, j += 4) {
    data[i] = rgba[j];
    data[i + 1] = rgba[j + 1];
    data[i + 2] = rgba[j + 2];
  }
  return tf.tensor3d(data, [height, width, 3], 'float32');
}

function rgbaToRgb(rgba, count) {
  const rgb = new Uint8Array(count * 3);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    rgb[i] = rgba[j];
    rgb[i + 1] = rgba[j + 1];
    rgb[i + 2] = rgba[j + 2];
  }
  return rgb;
}

// --- geometry: dlib's chip --------------------------------------------------------------------

/** Least-squares similarity (rotation, uniform scale, translation) mapping `from` onto `to`. */
export function similarityTransform(from, to) {
  const n = from.length;
  let fx = 0, fy = 0, tx = 0, ty = 0;
  for (let i = 0; i < n; i++) {
    fx += from[i][0]; fy += from[i][1]; tx += to[i][0]; ty += to[i][1];
  }
  fx /= n; fy /= n; tx /= n; ty /= n;
  let a = 0, b = 0, norm = 0;
  for (let i = 0; i < n; i++) {
    const x = from[i][0] - fx, y = from[i][1] - fy;
    const u = to[i][0] - tx, v = to[i][1] - ty;
    a += x * u + y * v;
    b += x * v - y * u;
    norm += x * x + y * y;
  }
  // In 2-D, Umeyama's rotation (with its reflection guard) and scale reduce to this.
  const c = a / norm, s = b / norm;     // scale*cos, scale*sin
  return { c, s, dx: tx - (c * fx - s * fy), dy: ty - (s * fx + c * fy) };
}

function applyTransform(t, x, y) {
  return [t.c * x - t.s * y + t.dx, t.s * x + t.c * y + t.dy];
}

/** dlib's chip_details for five points: {rect: [l, t, r, b], angle} in image pixels. */
export function faceChipDetails(points5, size = CHIP_SIZE, padding = CHIP_PADDING) {
  const from = TEMPLATE_5.map(([x, y]) => [
    ((padding + x) / (2 * padding + 1)) * size,
    ((padding + y) / (2 * padding + 1)) * size,
  ]);
  const t = similarityTransform(from, points5);
  const angle = Math.atan2(t.s, t.c);
  const scale = Math.hypot(t.c, t.s);
  const [cx, cy] = applyTransform(t, size / 2, size / 2);
  const w = size * scale - 1, h = size * scale - 1;        // centered_drect
  return { rect: [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], angle, size };
}

const rectArea = ([l, t, r, b]) => (t > b || l > r ? 0 : (r - l + 1) * (b - t + 1));
const rectDown = ([l, t, r, b]) => [l / 2 - 1.25, t / 2 - 0.75, r / 2 - 1.25, b / 2 - 0.75];

function rotateAbout(cx, cy, x, y, angle) {
  const cos = Math.cos(angle), sin = Math.sin(angle);
  const dx = x - cx, dy = y - cy;
  return [cos * dx - sin * dy + cx, sin * dx + cos * dy + cy];
}

/** dlib's pyramid_down<2> on an RGB image: 5x5 [1 4 6 4 1] filter, every other pixel. */
function pyramidDown(src, width, height) {
  if (width <= 8 || height <= 8) return { data: new Uint8Array(0), width: 0, height: 0 };
  const tw = Math.floor((width - 3) / 2);
  const ow = tw, oh = Math.floor((height - 3) / 2);
  const temp = new Uint16Array(height * tw * 3);
  for (let r = 0; r < height; r++) {
    const row = r * width * 3;
    const trow = r * tw * 3;
    for (let c = 0, oc = 0; c < tw; c++, oc += 2) {
      const p = row + oc * 3;
      for (let k = 0; k < 3; k++) {
        temp[trow + c * 3 + k] = src[p + k] + 4 * src[p + 3 + k] + 6 * src[p + 6 + k]
          + 4 * src[p + 9 + k] + src[p + 12 + k];
      }
    }
  }
  const out = new Uint8Array(ow * oh * 3);
  const stride = tw * 3;
  for (let r = 2, dr = 0; r < height - 2 && dr < oh; r += 2, dr++) {
    const base = r * stride;
    const orow = dr * ow * 3;
    for (let i = 0; i < stride; i++) {
      const v = temp[base - 2 * stride + i] + 4 * temp[base - stride + i] + 6 * temp[base + i]
        + 4 * temp[base + stride + i] + temp[base + 2 * stride + i];
      out[orow + i] = v >> 8;
    }
  }
  return { data: out, width: ow, height: oh };
}

/**
 * dlib's extract_image_chip for one chip: returns a Float32Array of 150x150 RGB values.
 * `readRegion(x, y, w, h)` gives the RGB bytes of an integer rectangle of the image.
 */
export function extractChip(details, imageWidth, imageHeight, readRegion) {
  const { rect, angle, size } = details;
  const chipArea = size * size;
  // How deep the pyramid goes and how much border it needs (dlib's bookkeeping).
  let depth = 0, grow = 2;
  let r = rectDown(rect);
  while (rectArea(r) > chipArea) {
    r = rectDown(r);
    depth++;
    grow = grow * 2 + 2;
  }
  const [l, t, rr, b] = rect;
  const cx = (l + rr) / 2, cy = (t + b) / 2;
  const corners = [[l, t], [rr, t], [l, b], [rr, b]].map(([x, y]) => rotateAbout(cx, cy, x, y, angle));
  let bl = Math.min(...corners.map((p) => p[0])) - grow;
  let bt = Math.min(...corners.map((p) => p[1])) - grow;
  let br = Math.max(...corners.map((p) => p[0])) + grow;
  let bb = Math.max(...corners.map((p) => p[1])) + grow;
  bl = Math.max(bl, 0); bt = Math.max(bt, 0);
  br = Math.min(br, imageWidth - 1); bb = Math.min(bb, imageHeight - 1);
  // drectangle -> rectangle rounds each edge.
  const box = [Math.floor(bl + 0.5), Math.floor(bt + 0.5), Math.floor(br + 0.5), Math.floor(bb + 0.5)];
  const out = new Float32Array(size * size * 3);
  if (box[2] < box[0] || box[3] < box[1]) return out;      // face entirely outside: black

  let img = { width: box[2] - box[0] + 1, height: box[3] - box[1] + 1 };
  img.data = readRegion(box[0], box[1], img.width, img.height);
  // The level to sample from, and the chip rectangle in that level's coordinates.
  let local = [l - box[0], t - box[1], rr - box[0], b - box[1]];
  let level = -1;
  while (rectArea(rectDown(local)) > chipArea) {
    level++;
    local = rectDown(local);
  }
  for (let i = 0; i <= level; i++) img = pyramidDown(img.data, img.width, img.height);

  const [ll, lt, lr, lb] = local;
  const lcx = (ll + lr) / 2, lcy = (lt + lb) / 2;
  const [x0, y0] = rotateAbout(lcx, lcy, ll, lt, angle);
  const [x1, y1] = rotateAbout(lcx, lcy, lr, lt, angle);
  const [x2, y2] = rotateAbout(lcx, lcy, ll, lb, angle);
  const ux = (x1 - x0) / (size - 1), uy = (y1 - y0) / (size - 1);
  const vx = (x2 - x0) / (size - 1), vy = (y2 - y0) / (size - 1);
  const { data, width, height } = img;
  for (let row = 0; row < size; row++) {
    for (let col = 0; col < size; col++) {
      const px = x0 + col * ux + row * vx;
      const py = y0 + col * uy + row * vy;
      const left = Math.floor(px), top = Math.floor(py);
      if (!(left >= 0 && top >= 0 && left + 1 < width && top + 1 < height)) continue;
      const fx = px - left, fy = py - top;
      const i00 = (top * width + left) * 3, i10 = i00 + 3;
      const i01 = i00 + width * 3, i11 = i01 + 3;
      const o = (row * size + col) * 3;
      for (let k = 0; k < 3; k++) {
        const v = (1 - fy) * ((1 - fx) * data[i00 + k] + fx * data[i10 + k])
          + fy * ((1 - fx) * data[i01 + k] + fx * data[i11 + k]);
        out[o + k] = Math.trunc(v);
      }
    }
  }
  return out;
}

/** The 150x150 RGB chip (Float32Array) of a face given dlib's five points in image pixels. */
export function faceChip(input, points5) {
  const [width, height] = sourceSize(input);
  const details = faceChipDetails(points5);
  return extractChip(details, width, height,
    (x, y, w, h) => rgbaToRgb(readPixels(input, x, y, w, h, w, h), w * h));
}

/** 128-d descriptor of a 150x150 RGB chip with face-api's copy of dlib's ResNet. */
export async function describeChip(chip) {
  const scaled = new Float32Array(chip.length);
  for (let i = 0; i < chip.length; i++) {
    const mean = RGB_MEAN[i % 3];
    scaled[i] = mean + (chip[i] - mean) * INPUT_RESCALE;
  }
  const tensor = tf.tensor3d(scaled, [CHIP_SIZE, CHIP_SIZE, 3], 'float32');
  try {
    const descriptor = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(tensor);
    return descriptor instanceof Float32Array ? descriptor : Float32Array.from(descriptor);
  } finally {
    tensor.dispose();
  }
}

// --- the pipeline ----------------------------------------------------------------------------------

async function detect(input, width, height) {
  const scale = Math.min(1, DETECT_SIZE / Math.max(width, height));
  const dw = Math.max(1, Math.round(width * scale)), dh = Math.max(1, Math.round(height * scale));
  const tensor = rgbaToTensor(readPixels(input, 0, 0, width, height, dw, dh), dw, dh);
  try {
    const options = new faceapi.SsdMobilenetv1Options({ minConfidence: MIN_CONFIDENCE, maxResults: MAX_FACES });
    const found = await faceapi.nets.ssdMobilenetv1.locateFaces(tensor, options);
    const sx = width / dw, sy = height / dh;
    return found.map((d) => ({
      score: d.score,
      x: d.box.x * sx, y: d.box.y * sy, width: d.box.width * sx, height: d.box.height * sy,
    }));
  } finally {
    tensor.dispose();
  }
}

// The 68-point scheme mirrored left to right (iBUG numbering).
const MIRROR_68 = [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20,
  19, 18, 17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54,
  53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65];

/** 68 landmarks of the crop (x, y, w, h) of the image, optionally read mirrored. */
async function cropLandmarks(input, x, y, w, h, mirrored) {
  const scale = LANDMARK_SIZE / Math.max(w, h);
  const cw = Math.max(1, Math.round(w * scale)), ch = Math.max(1, Math.round(h * scale));
  const canvas = makeCanvas(cw, ch);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  if (mirrored) {
    ctx.translate(cw, 0);
    ctx.scale(-1, 1);
  }
  ctx.drawImage(input, x, y, w, h, 0, 0, cw, ch);
  const tensor = rgbaToTensor(ctx.getImageData(0, 0, cw, ch).data, cw, ch);
  try {
    const marks = await faceapi.nets.faceLandmark68Net.detectLandmarks(tensor);
    // Back to image pixels; face-api measures from pixel edges, dlib from pixel centres.
    const points = marks.positions.map((p) => [
      x + ((mirrored ? cw - p.x : p.x) * w) / cw - 0.5,
      y + (p.y * h) / ch - 0.5,
    ]);
    return mirrored ? MIRROR_68.map((i) => points[i]) : points;
  } finally {
    tensor.dispose();
  }
}

function extent(points) {
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  return { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, side: Math.max(x1 - x0, y1 - y0) };
}

async function landmarks68(input, width, height, box) {
  // First pass on face-api's own crop: the detector's box clipped to the image and floored.
  const x = Math.floor(Math.max(0, box.x)), y = Math.floor(Math.max(0, box.y));
  const w = Math.floor(Math.min(width, box.x + box.width)) - x;
  const h = Math.floor(Math.min(height, box.y + box.height)) - y;
  if (w < 2 || h < 2) return null;
  const first = await cropLandmarks(input, x, y, w, h, false);
  // Second pass on a square around the first landmarks, read straight and mirrored and
  // averaged: the detector's box sits loosely on the face, and the net leans to one side.
  const { cx, cy, side } = extent(first);
  const s = Math.max(2, side * LANDMARK_BOX);
  const [a, b] = await Promise.all([
    cropLandmarks(input, cx - s / 2, cy - s / 2, s, s, false),
    cropLandmarks(input, cx - s / 2, cy - s / 2, s, s, true),
  ]);
  return a.map((p, i) => [(p[0] + b[i][0]) / 2, (p[1] + b[i][1]) / 2]);
}

/**
 * dlib's five points from 68 landmarks: 45, 42, 36, 39, 33, moved down the face by
 * LANDMARK_SHIFT_Y inter-ocular distances (face-api's eye corners and nose base sit higher
 * on the face than those of dlib's 5-point model, by the same fraction at every scale).
 */
export function fivePoints(landmarks) {
  const five = FIVE_FROM_68.map((i) => [landmarks[i][0], landmarks[i][1]]);
  const ex = five[0][0] - five[2][0], ey = five[0][1] - five[2][1];    // outer eye corners
  const shift = LANDMARK_SHIFT_Y;
  // (-ey, ex) is perpendicular to the eye line, pointing from the eyes to the mouth.
  return five.map(([px, py]) => [px - ey * shift, py + ex * shift]);
}

/**
 * Faces in `input` with their 68 landmarks (dlib pixel coordinates: pixel centres at integers):
 * [{box: {x, y, width, height}, score, landmarks: [[x, y] x 68]}].
 */
export async function locateFaces(input) {
  await loadFaceModels();
  const [width, height] = sourceSize(input);
  if (!width || !height) return [];
  const faces = [];
  for (const box of await detect(input, width, height)) {
    const landmarks = await landmarks68(input, width, height, box);
    if (!landmarks) continue;
    const x = Math.max(0, box.x), y = Math.max(0, box.y);
    faces.push({
      box: {
        x: Math.round(x), y: Math.round(y),
        width: Math.round(Math.min(width, box.x + box.width) - x),
        height: Math.round(Math.min(height, box.y + box.height) - y),
      },
      score: box.score,
      landmarks,
    });
  }
  faces.sort((a, b) => a.box.x - b.box.x || a.box.y - b.box.y);
  return faces;
}

/**
 * Faces in `input` (HTMLImageElement | HTMLCanvasElement | ImageBitmap | OffscreenCanvas):
 * [{box: {x, y, width, height}, descriptor: Float32Array(128), score}], box in the input's pixels.
 */
export async function describeFaces(input) {
  const faces = [];
  for (const face of await locateFaces(input)) {
    const five = fivePoints(face.landmarks);
    const descriptor = await describeChip(faceChip(input, five));
    faces.push({ box: face.box, descriptor, score: face.score });
  }
  return faces;
}
