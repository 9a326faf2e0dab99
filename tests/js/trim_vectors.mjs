// Node side of the shared trim vectors (tests/vectors/trim.json): pdq.js trimBorders must give
// each vector's box, with the same tolerance as written in the file. Prints JSON
// {"checked": n, "failures": [...]} and exits 1 when any vector fails.
import { readFileSync } from 'node:fs';
import { trimBorders, TRIM_TOLERANCE, TRIM_MIN_KEEP } from '../../intake/static/js/pdq.js';

const spec = JSON.parse(readFileSync(new URL('../vectors/trim.json', import.meta.url), 'utf8'));
const failures = [];
if (spec.tolerance !== TRIM_TOLERANCE || spec.min_keep !== TRIM_MIN_KEEP) {
  failures.push({ name: 'constants', expected: [spec.tolerance, spec.min_keep], got: [TRIM_TOLERANCE, TRIM_MIN_KEEP] });
}
for (const v of spec.vectors) {
  const rgba = new Uint8ClampedArray(v.width * v.height * 4);
  for (let i = 0; i < v.width * v.height; i++) {
    rgba.set(v.rgb.slice(i * 3, i * 3 + 3), i * 4);
    rgba[i * 4 + 3] = 255;
  }
  const box = trimBorders(rgba, v.width, v.height);
  if (['x', 'y', 'width', 'height'].some((k) => box[k] !== v.box[k])) failures.push({ name: v.name, expected: v.box, got: box });
}
process.stdout.write(JSON.stringify({ checked: spec.vectors.length, failures }));
process.exitCode = failures.length ? 1 : 0;
