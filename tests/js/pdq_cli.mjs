// Test helper: runs intake/static/js/pdq.js in Node on raw frames the Python tests wrote.
// stdin: JSON {"frames": [{"path", "width", "height", "channels": 1|3|4, "ops": [...]}]}
// where ops name pdq.js functions: "hash", "dihedral", "trim", "variants".
// stdout: a JSON array, one object per frame, keyed by op (plus "ms" per frame).
import { readFileSync } from 'node:fs';
import { pdqHash, pdqDihedral, trimBorders, pdqVariants } from '../../intake/static/js/pdq.js';

function toRGBA(raw, width, height, channels) {
  if (channels === 4) return new Uint8ClampedArray(raw.buffer, raw.byteOffset, raw.length);
  const out = new Uint8ClampedArray(width * height * 4);
  for (let i = 0, p = 0; i < width * height; i++, p += channels) {
    out[i * 4] = raw[p];
    out[i * 4 + 1] = raw[channels === 1 ? p : p + 1];
    out[i * 4 + 2] = raw[channels === 1 ? p : p + 2];
    out[i * 4 + 3] = 255;
  }
  return out;
}

const request = JSON.parse(readFileSync(0, 'utf8'));
const results = [];
for (const f of request.frames) {
  const raw = readFileSync(f.path);
  if (raw.length !== f.width * f.height * f.channels) {
    results.push({ error: `frame ${f.path}: ${raw.length} bytes for ${f.width}x${f.height}x${f.channels}` });
    continue;
  }
  const rgba = toRGBA(raw, f.width, f.height, f.channels);
  const out = {};
  const t0 = performance.now();
  for (const op of f.ops) {
    if (op === 'hash') out.hash = pdqHash(rgba, f.width, f.height);
    else if (op === 'dihedral') out.dihedral = pdqDihedral(rgba, f.width, f.height);
    else if (op === 'trim') out.trim = trimBorders(rgba, f.width, f.height);
    else if (op === 'variants') out.variants = pdqVariants(rgba, f.width, f.height);
    else out.error = `unknown op ${op}`;
  }
  out.ms = performance.now() - t0;
  results.push(out);
}
process.stdout.write(JSON.stringify(results));
