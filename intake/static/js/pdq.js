// PDQ perceptual hash (Meta ThreatExchange), written from the published description, plus
// the border trim and centre crops that give the variants a victim's photo is registered
// under. Pure computation on typed arrays: runs in a page, a Web Worker and Node, and touches
// no DOM. The server does the same in workers/images.py (pdqhash); tests/workers/signals/test_pdq_conformance.py
// holds the two together.
//
// Arithmetic follows pdqhash bit for bit, so that near-median DCT coefficients fall the same
// way: luma is computed in double and stored as float32 (pdqhash does it with numpy; the C++
// reference's own RGB path would use float32 weights), the box filters, DCT and quality metric
// run in float32 (every intermediate rounded with Math.fround or by a Float32Array store), the
// DCT scale factor is a float32, a 64x64 input skips the filter on the plain path but not on
// the dihedral one. tests/workers/signals/test_pdq_conformance.py finds 0 bits of difference on its corpus.
//
// Speed (a 12 MP photo in ~0.2 s of CPU in V8): the tent filter computes only what the 64x64
// decimation reads (the last column pass runs on the 64 sampled columns, the second row pass
// keeps the 64 sampled outputs; every running sum still starts at the edge, as in the
// reference), and the row passes run four rows at once so that their rounding chains overlap.

const HASH_DIM = 64;            // the image is brought down to 64x64
const DCT_DIM = 16;             // of whose DCT the 16x16 lowest non-DC frequencies are kept
const MIN_HASHABLE_DIM = 5;     // smaller images hash to zero with quality 0, as the reference
const JAROSZ_PASSES = 2;        // X,Y,X,Y box passes make a tent filter
const WINDOW_DIVISOR = 2 * HASH_DIM;

// Trim rule, shared with workers/images.py (TRIM_TOLERANCE there): an edge line (row or
// column) is border when each channel of each of its pixels is within TRIM_TOLERANCE of that
// side's reference colour (its outermost line's first pixel). Top and bottom are trimmed over
// the full width, then left and right over the rows that remain. Nothing is trimmed when
// less than TRIM_MIN_KEEP of either dimension would remain (a flat or almost flat image).
export const TRIM_TOLERANCE = 24;
export const TRIM_MIN_KEEP = 0.1;

// Thumbnail shapes registered as centre crops, and how close to the image's own shape a crop
// may be before it is skipped (it would be the full image again).
export const CROP_ASPECTS = [['1:1', 1, 1], ['4:3', 4, 3], ['3:4', 3, 4], ['16:9', 16, 9], ['9:16', 9, 16]];
export const TOP_PART = 3;
export const TOP_MIN_ROWS = 32;
export const CROP_SKIP_RELATIVE = 0.02;

export const DIHEDRAL_VARIANTS = ['orig', 'rot90', 'rot180', 'rot270', 'flipx', 'flipy', 'flipplus', 'flipminus'];

const fround = Math.fround;

// Luma weights as doubles, in tables: (r*0.299 + g*0.587) + b*0.114, rounded to float32.
const LUMA_R = new Float64Array(256);
const LUMA_G = new Float64Array(256);
const LUMA_B = new Float64Array(256);
for (let v = 0; v < 256; v++) {
  LUMA_R[v] = v * 0.299;
  LUMA_G[v] = v * 0.587;
  LUMA_B[v] = v * 0.114;
}

// 16x64 DCT-II rows for frequencies 1..16 (row 0, the DC term, is left out), float32.
const DCT_MATRIX = (() => {
  const m = new Float32Array(DCT_DIM * HASH_DIM);
  const scale = fround(Math.sqrt(2.0 / HASH_DIM));   // a float32 in the reference
  for (let i = 0; i < DCT_DIM; i++) {
    for (let j = 0; j < HASH_DIM; j++) {
      m[i * HASH_DIM + j] = scale * Math.cos((Math.PI / 2 / HASH_DIM) * (i + 1) * (2 * j + 1));
    }
  }
  return m;
})();

// Luma of one row of the box (x0..x0+w) of image row y, into out[outStart..outStart+w).
function lumaRow(rgba, width, x0, y, w, out, outStart) {
  let p = (y * width + x0) * 4;
  for (let x = 0; x < w; x++, p += 4) {
    out[outStart + x] = LUMA_R[rgba[p]] + LUMA_G[rgba[p + 1]] + LUMA_B[rgba[p + 2]];
  }
}

function windowSize(oldDim) {
  return Math.floor((oldDim + WINDOW_DIVISOR - 1) / WINDOW_DIVISOR);
}

// One 1-D box pass over n values (stride 1), with the reference's float32 running sum in its
// four phases: grow the window, write with a growing window, slide, write with a shrinking one.
function box1D(input, inStart, output, outStart, n, full) {
  const half = Math.floor((full + 2) / 2);
  const n1 = half - 1;
  const n2 = full - half + 1;
  const n3 = n - full;
  const n4 = half - 1;
  let li = inStart;
  let ri = inStart;
  let oi = outStart;
  let sum = 0;
  let count = 0;
  for (let i = 0; i < n1; i++) { sum = fround(sum + input[ri++]); count++; }
  for (let i = 0; i < n2; i++) { sum = fround(sum + input[ri++]); count++; output[oi++] = sum / count; }
  for (let i = 0; i < n3; i++) {
    sum = fround(sum + input[ri++]);
    sum = fround(sum - input[li++]);
    output[oi++] = sum / count;
  }
  for (let i = 0; i < n4; i++) { sum = fround(sum - input[li++]); count--; output[oi++] = sum / count; }
}

// box1D that keeps only the outputs at the given ascending positions (repeats allowed, a
// negative sentinel after the last), written to out[outStart + k]: the running sum still
// goes over every value.
function box1DSampled(input, n, full, positions, out, outStart) {
  const half = Math.floor((full + 2) / 2);
  const n1 = half - 1;
  const n2 = full - half + 1;
  const n3 = n - full;
  const n4 = half - 1;
  let li = 0;
  let ri = 0;
  let oi = 0;
  let k = 0;
  let next = positions[0];
  let sum = 0;
  let count = 0;
  for (let i = 0; i < n1; i++) { sum = fround(sum + input[ri++]); count++; }
  for (let i = 0; i < n2; i++, oi++) {
    sum = fround(sum + input[ri++]);
    count++;
    while (oi === next) { out[outStart + k++] = sum / count; next = positions[k]; }
  }
  for (let i = 0; i < n3; i++, oi++) {
    sum = fround(sum + input[ri++]);
    sum = fround(sum - input[li++]);
    while (oi === next) { out[outStart + k++] = sum / count; next = positions[k]; }
  }
  for (let i = 0; i < n4; i++, oi++) {
    sum = fround(sum - input[li++]);
    count--;
    while (oi === next) { out[outStart + k++] = sum / count; next = positions[k]; }
  }
}

// box1D on four rows at once (input rows at inStart + k * stride, output rows at
// outStart + k * stride): four independent running sums, so that the CPU overlaps them
// instead of waiting on one sum's chain of roundings. Per row, the very same operations.
function box1D4(input, inStart, output, outStart, stride, n, full) {
  const half = Math.floor((full + 2) / 2);
  const n1 = half - 1;
  const n2 = full - half + 1;
  const n3 = n - full;
  const n4 = half - 1;
  const i1 = stride;
  const i2 = 2 * stride;
  const i3 = 3 * stride;
  let li = inStart;
  let ri = inStart;
  let oi = outStart;
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let count = 0;
  for (let i = 0; i < n1; i++, ri++) {
    s0 = fround(s0 + input[ri]); s1 = fround(s1 + input[ri + i1]);
    s2 = fround(s2 + input[ri + i2]); s3 = fround(s3 + input[ri + i3]);
    count++;
  }
  for (let i = 0; i < n2; i++, ri++, oi++) {
    s0 = fround(s0 + input[ri]); s1 = fround(s1 + input[ri + i1]);
    s2 = fround(s2 + input[ri + i2]); s3 = fround(s3 + input[ri + i3]);
    count++;
    output[oi] = s0 / count; output[oi + i1] = s1 / count;
    output[oi + i2] = s2 / count; output[oi + i3] = s3 / count;
  }
  for (let i = 0; i < n3; i++, ri++, li++, oi++) {
    s0 = fround(fround(s0 + input[ri]) - input[li]);
    s1 = fround(fround(s1 + input[ri + i1]) - input[li + i1]);
    s2 = fround(fround(s2 + input[ri + i2]) - input[li + i2]);
    s3 = fround(fround(s3 + input[ri + i3]) - input[li + i3]);
    output[oi] = s0 / count; output[oi + i1] = s1 / count;
    output[oi + i2] = s2 / count; output[oi + i3] = s3 / count;
  }
  for (let i = 0; i < n4; i++, li++, oi++) {
    s0 = fround(s0 - input[li]); s1 = fround(s1 - input[li + i1]);
    s2 = fround(s2 - input[li + i2]); s3 = fround(s3 - input[li + i3]);
    count--;
    output[oi] = s0 / count; output[oi + i1] = s1 / count;
    output[oi + i2] = s2 / count; output[oi + i3] = s3 / count;
  }
}

// box1DSampled on four rows at once (input rows at k * stride, output rows at
// outStart + k * outStride).
function box1DSampled4(input, stride, n, full, positions, out, outStart, outStride) {
  const half = Math.floor((full + 2) / 2);
  const n1 = half - 1;
  const n2 = full - half + 1;
  const n3 = n - full;
  const n4 = half - 1;
  const i1 = stride;
  const i2 = 2 * stride;
  const i3 = 3 * stride;
  const p1 = outStart + outStride;
  const p2 = outStart + 2 * outStride;
  const p3 = outStart + 3 * outStride;
  let li = 0;
  let ri = 0;
  let oi = 0;
  let k = 0;
  let next = positions[0];
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let count = 0;
  for (let i = 0; i < n1; i++, ri++) {
    s0 = fround(s0 + input[ri]); s1 = fround(s1 + input[ri + i1]);
    s2 = fround(s2 + input[ri + i2]); s3 = fround(s3 + input[ri + i3]);
    count++;
  }
  for (let i = 0; i < n2; i++, ri++, oi++) {
    s0 = fround(s0 + input[ri]); s1 = fround(s1 + input[ri + i1]);
    s2 = fround(s2 + input[ri + i2]); s3 = fround(s3 + input[ri + i3]);
    count++;
    while (oi === next) {
      out[outStart + k] = s0 / count; out[p1 + k] = s1 / count;
      out[p2 + k] = s2 / count; out[p3 + k] = s3 / count;
      next = positions[++k];
    }
  }
  for (let i = 0; i < n3; i++, ri++, li++, oi++) {
    s0 = fround(fround(s0 + input[ri]) - input[li]);
    s1 = fround(fround(s1 + input[ri + i1]) - input[li + i1]);
    s2 = fround(fround(s2 + input[ri + i2]) - input[li + i2]);
    s3 = fround(fround(s3 + input[ri + i3]) - input[li + i3]);
    while (oi === next) {
      out[outStart + k] = s0 / count; out[p1 + k] = s1 / count;
      out[p2 + k] = s2 / count; out[p3 + k] = s3 / count;
      next = positions[++k];
    }
  }
  for (let i = 0; i < n4; i++, li++, oi++) {
    s0 = fround(s0 - input[li]); s1 = fround(s1 - input[li + i1]);
    s2 = fround(s2 - input[li + i2]); s3 = fround(s3 - input[li + i3]);
    count--;
    while (oi === next) {
      out[outStart + k] = s0 / count; out[p1 + k] = s1 / count;
      out[p2 + k] = s2 / count; out[p3 + k] = s3 / count;
      next = positions[++k];
    }
  }
}

// The same pass down every column of a rows x cols plane at once, row by row (cache
// friendly; per column the float32 operations are the reference's, in its order). Output
// row o goes to ring[(o % 4) * cols ...], then emit(o) is called; the ring holds the last
// four output rows, so that the caller can process them four at a time.
function boxColumns(input, rows, cols, full, ring, emit) {
  const half = Math.floor((full + 2) / 2);
  const n1 = half - 1;
  const n2 = full - half + 1;
  const n3 = rows - full;
  const n4 = half - 1;
  const sums = new Float32Array(cols);
  let ri = 0;
  let li = 0;
  let o = 0;
  let count = 0;
  for (let i = 0; i < n1; i++, ri += cols) {
    for (let j = 0; j < cols; j++) sums[j] += input[ri + j];
    count++;
  }
  for (let i = 0; i < n2; i++, ri += cols, o++) {
    count++;
    const base = (o & 3) * cols;
    for (let j = 0; j < cols; j++) {
      sums[j] += input[ri + j];
      ring[base + j] = sums[j] / count;
    }
    emit(o);
  }
  for (let i = 0; i < n3; i++, ri += cols, li += cols, o++) {
    const base = (o & 3) * cols;
    for (let j = 0; j < cols; j++) {
      sums[j] += input[ri + j];
      sums[j] -= input[li + j];
      ring[base + j] = sums[j] / count;
    }
    emit(o);
  }
  for (let i = 0; i < n4; i++, li += cols, o++) {
    count--;
    const base = (o & 3) * cols;
    for (let j = 0; j < cols; j++) {
      sums[j] -= input[li + j];
      ring[base + j] = sums[j] / count;
    }
    emit(o);
  }
}

// Tent filter (box along rows, along columns, twice) and decimation to 64x64 of the luma of
// a box of the image. Only what the 64 sampled rows and columns depend on is computed: the
// second column pass runs on the 64 sampled columns alone (the running sums still start at
// the top, so every value is the one the full reference computes).
function downsample(rgba, width, box, rows, cols) {
  const alongRows = windowSize(cols);
  const alongCols = windowSize(rows);
  const sampleRows = new Int32Array(HASH_DIM);
  const sampleCols = new Int32Array(HASH_DIM + 1);   // ends with a -1 sentinel
  sampleCols[HASH_DIM] = -1;
  for (let i = 0; i < HASH_DIM; i++) {
    sampleRows[i] = Math.trunc(((i + 0.5) * rows) / HASH_DIM);
    sampleCols[i] = Math.trunc(((i + 0.5) * cols) / HASH_DIM);
  }
  // Pass 1 along rows, straight from the pixels, four rows at a time.
  const plane = new Float32Array(rows * cols);
  const quad = new Float32Array(4 * cols);
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    for (let k = 0; k < 4; k++) lumaRow(rgba, width, box.x, box.y + r + k, cols, quad, k * cols);
    box1D4(quad, 0, plane, r * cols, cols, cols, alongRows);
  }
  for (; r < rows; r++) {
    lumaRow(rgba, width, box.x, box.y + r, cols, quad, 0);
    box1D(quad, 0, plane, r * cols, cols, alongRows);
  }
  // Pass 1 along columns, its output rows going four at a time through pass 2 along rows;
  // only the 64 sampled columns are kept.
  const narrow = new Float32Array(rows * HASH_DIM);
  boxColumns(plane, rows, cols, alongCols, quad, (o) => {
    if ((o & 3) === 3) box1DSampled4(quad, cols, cols, alongRows, sampleCols, narrow, (o - 3) * HASH_DIM, HASH_DIM);
  });
  for (let o = rows - (rows & 3); o < rows; o++) {   // the last rows that made no group of four
    box1DSampled(quad.subarray((o & 3) * cols), cols, alongRows, sampleCols, narrow, o * HASH_DIM);
  }
  // Pass 2 along the 64 columns; keep the 64 sampled rows.
  const a = new Float32Array(HASH_DIM * HASH_DIM);
  const ring = new Float32Array(4 * HASH_DIM);
  let next = 0;
  boxColumns(narrow, rows, HASH_DIM, alongCols, ring, (o) => {
    while (next < HASH_DIM && sampleRows[next] === o) {
      a.set(ring.subarray((o & 3) * HASH_DIM, ((o & 3) + 1) * HASH_DIM), next * HASH_DIM);
      next++;
    }
  });
  return a;
}

function qualityOf(a) {
  let gradientSum = 0;
  for (let i = 0; i < HASH_DIM - 1; i++) {
    for (let j = 0; j < HASH_DIM; j++) {
      const d = fround(fround(fround(a[i * HASH_DIM + j] - a[(i + 1) * HASH_DIM + j]) * 100) / 255);
      gradientSum += Math.abs(Math.trunc(d));
    }
  }
  for (let i = 0; i < HASH_DIM; i++) {
    for (let j = 0; j < HASH_DIM - 1; j++) {
      const d = fround(fround(fround(a[i * HASH_DIM + j] - a[i * HASH_DIM + j + 1]) * 100) / 255);
      gradientSum += Math.abs(Math.trunc(d));
    }
  }
  return Math.min(100, Math.trunc(gradientSum / 90));
}

// 16x16 DCT coefficients (row-major, [row frequency][column frequency]) and quality of a
// float32 luma plane, or null when the plane is too small to hash.
// 16x16 DCT coefficients (row-major, [row frequency][column frequency]) and quality of a box
// of the image, or null when it is too small to hash. A 64x64 box is taken as it is,
// unfiltered, for the plain hash; the reference filters it all the same on its dihedral path
// (dihedral = true), which is kept so as to agree with it bit for bit.
function dctOf(rgba, width, box, dihedral = false) {
  const rows = box.height;
  const cols = box.width;
  if (rows < MIN_HASHABLE_DIM || cols < MIN_HASHABLE_DIM) return null;
  let a;
  if (!dihedral && rows === HASH_DIM && cols === HASH_DIM) {
    a = new Float32Array(HASH_DIM * HASH_DIM);
    for (let r = 0; r < HASH_DIM; r++) lumaRow(rgba, width, box.x, box.y + r, HASH_DIM, a, r * HASH_DIM);
  } else {
    a = downsample(rgba, width, box, rows, cols);
  }
  const quality = qualityOf(a);
  const t = new Float32Array(DCT_DIM * HASH_DIM);   // T = D A
  for (let i = 0; i < DCT_DIM; i++) {
    for (let j = 0; j < HASH_DIM; j++) {
      let s = 0;
      for (let k = 0; k < HASH_DIM; k++) s = fround(s + fround(DCT_MATRIX[i * HASH_DIM + k] * a[k * HASH_DIM + j]));
      t[i * HASH_DIM + j] = s;
    }
  }
  const b = new Float32Array(DCT_DIM * DCT_DIM);     // B = T D'
  for (let i = 0; i < DCT_DIM; i++) {
    for (let j = 0; j < DCT_DIM; j++) {
      let s = 0;
      for (let k = 0; k < HASH_DIM; k++) s = fround(s + fround(t[i * HASH_DIM + k] * DCT_MATRIX[j * HASH_DIM + k]));
      b[i * DCT_DIM + j] = s;
    }
  }
  return { dct: b, quality };
}

const HEX = '0123456789abcdef';
const ZERO_HASH = '0'.repeat(64);

// Bit k (k = row * 16 + column) is set when coefficient k is above the median (the 128th
// smallest of 256). Hex prints bit 255 first, as Meta's tools and pdqhash's vector order do.
function bitsToHex(dct) {
  const sorted = Float32Array.from(dct).sort();
  const median = sorted[(DCT_DIM * DCT_DIM) / 2 - 1];
  let hex = '';
  for (let k = 255; k >= 0; k -= 4) {
    const nibble = ((dct[k] > median) << 3) | ((dct[k - 1] > median) << 2) |
                   ((dct[k - 2] > median) << 1) | (dct[k - 3] > median);
    hex += HEX[nibble];
  }
  return hex;
}

function checkFrame(rgba, width, height) {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`bad image size ${width}x${height}`);
  }
  if (!rgba || rgba.length < width * height * 4) {
    throw new RangeError(`pixel buffer holds ${rgba ? rgba.length : 0} bytes, ${width}x${height} RGBA needs ${width * height * 4}`);
  }
}

function hashBox(rgba, width, height, box) {
  const result = dctOf(rgba, width, box || { x: 0, y: 0, width, height });
  if (!result) return { hash: ZERO_HASH, quality: 0 };
  return { hash: bitsToHex(result.dct), quality: result.quality };
}

export function pdqHash(rgba, width, height) {
  checkFrame(rgba, width, height);
  return hashBox(rgba, width, height, null);
}

export function pdqDistance(hexA, hexB) {
  if (typeof hexA !== 'string' || typeof hexB !== 'string' || hexA.length !== 64 || hexB.length !== 64) {
    throw new TypeError('PDQ hashes are 64 hex digits');
  }
  let d = 0;
  for (let i = 0; i < 64; i += 8) {
    let x = (parseInt(hexA.slice(i, i + 8), 16) ^ parseInt(hexB.slice(i, i + 8), 16)) >>> 0;
    while (x) { x &= x - 1; d++; }
  }
  return d;
}

// The eight dihedral transforms act on the DCT directly: mirroring columns negates the odd
// column frequencies (1, 3, ... i.e. even indices), mirroring rows the odd row frequencies,
// and a transpose swaps the indices. Order and meaning as pdqhash.compute_dihedral:
// rot90 = counter-clockwise quarter turn, flipx = upside down, flipy = left-right mirror,
// flipplus = transpose, flipminus = anti-transpose.
function dihedralDct(a, variant) {
  const b = new Float32Array(DCT_DIM * DCT_DIM);
  for (let i = 0; i < DCT_DIM; i++) {
    for (let j = 0; j < DCT_DIM; j++) {
      const v = a[i * DCT_DIM + j];
      const rowSign = (i & 1) ? 1 : -1;   // sign under a vertical mirror
      const colSign = (j & 1) ? 1 : -1;   // sign under a horizontal mirror
      switch (variant) {
        case 'orig': b[i * DCT_DIM + j] = v; break;
        case 'rot90': b[j * DCT_DIM + i] = colSign * v; break;
        case 'rot180': b[i * DCT_DIM + j] = rowSign * colSign * v; break;
        case 'rot270': b[j * DCT_DIM + i] = rowSign * v; break;
        case 'flipx': b[i * DCT_DIM + j] = rowSign * v; break;
        case 'flipy': b[i * DCT_DIM + j] = colSign * v; break;
        case 'flipplus': b[j * DCT_DIM + i] = v; break;
        case 'flipminus': b[j * DCT_DIM + i] = rowSign * colSign * v; break;
        default: throw new Error(`unknown variant ${variant}`);
      }
    }
  }
  return b;
}

export function pdqDihedral(rgba, width, height) {
  checkFrame(rgba, width, height);
  const result = dctOf(rgba, width, { x: 0, y: 0, width, height }, true);
  return DIHEDRAL_VARIANTS.map((variant) => result
    ? { variant, hash: bitsToHex(dihedralDct(result.dct, variant)), quality: result.quality }
    : { variant, hash: ZERO_HASH, quality: 0 });
}

function lineIsBorder(rgba, width, start, step, count, ref) {
  const r = ref[0], g = ref[1], b = ref[2];
  for (let k = 0, p = start; k < count; k++, p += step) {
    if (Math.abs(rgba[p] - r) > TRIM_TOLERANCE || Math.abs(rgba[p + 1] - g) > TRIM_TOLERANCE ||
        Math.abs(rgba[p + 2] - b) > TRIM_TOLERANCE) return false;
  }
  return true;
}

function pixelAt(rgba, width, x, y) {
  const p = (y * width + x) * 4;
  return [rgba[p], rgba[p + 1], rgba[p + 2]];
}

export function trimBorders(rgba, width, height) {
  checkFrame(rgba, width, height);
  const full = { x: 0, y: 0, width, height };
  const rowStep = 4;
  const colStep = width * 4;
  let top = 0;
  let bottom = height;                   // exclusive
  const topRef = pixelAt(rgba, width, 0, 0);
  while (top < height && lineIsBorder(rgba, width, top * width * 4, rowStep, width, topRef)) top++;
  const bottomRef = pixelAt(rgba, width, 0, height - 1);
  while (bottom > top && lineIsBorder(rgba, width, (bottom - 1) * width * 4, rowStep, width, bottomRef)) bottom--;
  if (bottom - top < Math.max(1, Math.ceil(height * TRIM_MIN_KEEP))) return full;
  const rows = bottom - top;
  let left = 0;
  let right = width;                     // exclusive
  const leftRef = pixelAt(rgba, width, 0, top);
  while (left < width && lineIsBorder(rgba, width, (top * width + left) * 4, colStep, rows, leftRef)) left++;
  const rightRef = pixelAt(rgba, width, width - 1, top);
  while (right > left && lineIsBorder(rgba, width, (top * width + right - 1) * 4, colStep, rows, rightRef)) right--;
  if (right - left < Math.max(1, Math.ceil(width * TRIM_MIN_KEEP))) return full;
  return { x: left, y: top, width: right - left, height: rows };
}

// The largest centred box of the given aspect (width / height) inside the image.
export function centerCrop(width, height, aspect) {
  if (width / height > aspect) {
    const w = Math.max(1, Math.min(width, Math.floor(height * aspect + 0.5)));
    return { x: Math.floor((width - w) / 2), y: 0, width: w, height };
  }
  const h = Math.max(1, Math.min(height, Math.floor(width / aspect + 0.5)));
  return { x: 0, y: Math.floor((height - h) / 2), width, height: h };
}

export function cropRGBA(rgba, width, height, box) {
  checkFrame(rgba, width, height);
  const out = new Uint8ClampedArray(box.width * box.height * 4);
  for (let y = 0; y < box.height; y++) {
    const start = ((box.y + y) * width + box.x) * 4;
    out.set(rgba.subarray(start, start + box.width * 4), y * box.width * 4);
  }
  return out;
}

export function pdqVariants(rgba, width, height) {
  checkFrame(rgba, width, height);
  const out = [{ variant: 'full', ...hashBox(rgba, width, height, null) }];
  const trim = trimBorders(rgba, width, height);
  if (trim.width !== width || trim.height !== height) {
    out.push({ variant: 'trimmed', ...hashBox(rgba, width, height, trim) });
  }
  const own = width / height;
  for (const [name, aw, ah] of CROP_ASPECTS) {
    const aspect = aw / ah;
    if (Math.abs(own / aspect - 1) <= CROP_SKIP_RELATIVE) continue;
    out.push({ variant: `crop-${name}`, ...hashBox(rgba, width, height, centerCrop(width, height, aspect)) });
  }
  // The top third on its own: an edit that repaints her body keeps it (images.py TOP_PART).
  const top = Math.floor(height / TOP_PART);
  if (top >= TOP_MIN_ROWS) out.push({ variant: 'top-third', ...hashBox(rgba, width, height, { x: 0, y: 0, width, height: top }) });
  return out;
}
