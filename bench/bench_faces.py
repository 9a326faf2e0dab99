#!/usr/bin/env python3
"""Face descriptors per 12-megapixel photo: faces.js in headless Chromium vs dlib on the server.

    .venv/bin/python bench/bench_faces.py [--runs N] [--sample 1]

Upscales one of face-api's demo group photos to 12 MP (JPEG), then times, in the same run:
  browser: decode (createImageBitmap) + describeFaces (wasm backend), in headless Chromium
  server:  decode (Pillow) + workers.signals.faces.describe_faces (dlib, HOG on CPU)
and prints the medians and their ratio (browser / server). Target: < 1 s per photo in the
browser.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from browser_signals import _wait, make_driver, serve  # noqa: E402
from PIL import Image  # noqa: E402

from workers.signals import faces  # noqa: E402

SAMPLES = ROOT / "node_modules" / "@vladmandic" / "face-api" / "demo"
MEGAPIXELS = 12.0

_TIME = """
const done = arguments[arguments.length - 1];
(async () => {
  const m = await import('/static/js/faces.js');
  await m.loadFaceModels('/static/vendor/face-api/model/');
  const blob = await (await fetch(arguments[0])).blob();
  const t0 = performance.now();
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none' });
  const t1 = performance.now();
  const found = await m.describeFaces(bitmap);
  const t2 = performance.now();
  bitmap.close();
  return { decode: t1 - t0, faces: t2 - t1, n: found.length, backend: m.faceBackend() };
})().then(done, (e) => done({ error: String(e && e.stack || e) }));
"""


def make_photo(sample: int, folder: Path) -> Path:
    src = Image.open(SAMPLES / f"sample{sample}.jpg").convert("RGB")
    scale = (MEGAPIXELS * 1e6 / (src.width * src.height)) ** 0.5
    big = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.BICUBIC)
    path = folder / f"sample{sample}-12mp.jpg"
    big.save(path, quality=92)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sample", type=int, default=1, choices=range(1, 7))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        photo = make_photo(args.sample, Path(tmp))
        with Image.open(photo) as im:
            size = im.size
        print(f"photo: {photo.name} {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} MP), {args.runs} runs after one warm-up")

        # server (dlib)
        server, n_server = [], 0
        for run in range(args.runs + 1):
            t0 = time.perf_counter()
            with Image.open(photo) as im:
                im.load()
                t1 = time.perf_counter()
                found = faces.describe_faces(im)
            t2 = time.perf_counter()
            n_server = len(found)
            if run:
                server.append((t1 - t0, t2 - t1))

        # browser (faces.js in headless Chromium)
        browser, n_browser, backend = [], 0, "?"
        driver = make_driver()
        try:
            with serve([photo]) as base:
                driver.get(base + "/harness/signals.html")
                _wait(driver, "window.harnessReady || window.harnessError")
                for run in range(args.runs + 1):
                    got = driver.execute_async_script(_TIME, "/files/0")
                    if "error" in got:
                        raise RuntimeError(got["error"])
                    n_browser, backend = got["n"], got["backend"]
                    if run:
                        browser.append((got["decode"] / 1000, got["faces"] / 1000))
        finally:
            driver.quit()

    def med(rows, k):
        return statistics.median(r[k] for r in rows)

    b_total = statistics.median(d + f for d, f in browser)
    s_total = statistics.median(d + f for d, f in server)
    print(f"browser ({backend}): {b_total:.3f} s per photo "
          f"(decode {med(browser, 0):.3f} s, faces {med(browser, 1):.3f} s), {n_browser} faces")
    detector = "CNN on CUDA" if faces.uses_cuda() else "HOG on CPU"
    print(f"server (dlib, {detector}): {s_total:.3f} s per photo "
          f"(decode {med(server, 0):.3f} s, faces {med(server, 1):.3f} s), {n_server} faces")
    print(f"ratio browser/server: {b_total / s_total:.2f}")
    print(f"target < 1 s per photo in the browser: {'met' if b_total < 1.0 else 'NOT met'}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (timings of a busy machine run long)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
