#!/usr/bin/env python3
"""Images per second per core through the whole server-side signal pipeline.

    .venv/bin/python bench/bench_signals.py [--photos 24] [--rounds 2]

What the crawler runs on each image body it captured (workers.signals.media.body_signals): SHA-256
and MD5 of the bytes, the plain decode (EXIF orientation applied), PDQ of the full image, the
trimmed one and five thumbnail-shaped centre crops, the eight dihedral turns, and face
descriptors (dlib HOG on the CPU, the image downscaled first). In one process, so on one core.

Photos: JPEGs of everyday sizes (0.3 to 12 megapixels): the face-api sample photos (people,
so the face detector finds and describes faces) and generated pictures (no faces), in turn.
The baseline, measured in the same run on the same bodies: the decode alone (Pillow,
workers.signals.images.decode_image). Prints images per second for the pipeline without faces and with
faces, and each as a ratio to the decode.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workers.signals.images import decode_image  # noqa: E402
from workers.signals.media import body_signals  # noqa: E402

SAMPLES = ROOT / "node_modules" / "@vladmandic" / "face-api" / "demo"
MEGAPIXELS = (0.3, 1, 2, 4, 8, 12)


def generated(seed: int, size) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (320, 240), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(25):
        x, y = int(rng.integers(0, 320)), int(rng.integers(0, 240))
        w, h = int(rng.integers(20, 150)), int(rng.integers(20, 150))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x, y, x + w, y + h],
                                                           fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img.filter(ImageFilter.GaussianBlur(1)).resize(size, Image.BICUBIC)


def photos(n: int) -> list[tuple[str, bytes]]:
    samples = sorted(SAMPLES.glob("sample*.jpg"))
    out = []
    for i in range(n):
        mp = MEGAPIXELS[i % len(MEGAPIXELS)]
        if samples and i % 2 == 0:
            src = Image.open(samples[(i // 2) % len(samples)]).convert("RGB")
            kind = "people"
        else:
            src, kind = None, "generated"
        aspect = 4 / 3 if src is None else src.width / src.height
        w = int((mp * 1e6 * aspect) ** 0.5)
        size = (w, int(w / aspect))
        img = src.resize(size, Image.BICUBIC) if src is not None else generated(i, size)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=88)
        out.append((f"{kind} {mp:g} MP", buf.getvalue()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    bodies = photos(args.photos)
    body_signals(bodies[0][1])                   # load the face models once, outside the timing
    times = {"decode": [], "signals": [], "signals+faces": []}
    faces_found = 0
    for _ in range(args.rounds):                 # interleaved: all three see the same load
        for _, data in bodies:
            t = time.perf_counter()
            decode_image(data)
            times["decode"].append(time.perf_counter() - t)
            t = time.perf_counter()
            body_signals(data, faces=False)
            times["signals"].append(time.perf_counter() - t)
            t = time.perf_counter()
            faces_found += len(body_signals(data, faces=True)["faces"])
            times["signals+faces"].append(time.perf_counter() - t)
    mp = statistics.mean(MEGAPIXELS[i % len(MEGAPIXELS)] for i in range(len(bodies)))
    print(f"{len(bodies)} JPEG photos x {args.rounds} rounds, {mp:.1f} MP on average, one process (one core); "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}")
    base = sum(times["decode"])
    for name, ts in times.items():
        total = sum(ts)
        print(f"  {name:14s} {len(ts) / total:6.2f} images/s per core   median {statistics.median(ts) * 1000:7.1f} ms"
              + ("" if name == "decode" else f"   {total / base:5.1f}x the decode alone"))
    print(f"  faces described: {faces_found // args.rounds} in {len(bodies)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
