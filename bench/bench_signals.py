#!/usr/bin/env python3
"""Images per second per core through the whole server-side signal pipeline.

    .venv/bin/python bench/bench_signals.py [--photos 24] [--rounds 2] [--workers 2]
    .venv/bin/python bench/bench_signals.py --drift 240 [--browser]

What the crawler runs on each image body it captured (workers.signals.media.body_signals): SHA-256
and MD5 of the bytes, a JPEG decode at a reduced DCT scale (images.PDQ_SIDE), PDQ of the full
image with its 8 dihedral turns (one computation), the trimmed image and the widest centre
crop, and, with faces, the face first pass (MTCNN's three nets) on the same decode, a larger
decode only where a face is small there (faces.DETAIL_FACE), and dlib's landmarks and
descriptor of each face.

Photos: JPEGs of everyday sizes (0.3 to 12 megapixels): the face-api sample photos (people,
so the face detector finds and describes faces) and generated pictures (no faces), in turn.
The baseline, measured in the same run on the same bodies: the plain full decode alone (Pillow,
workers.signals.images.decode_image). Prints images per second for the pipeline without faces
and with faces, each as a ratio to the decode, the time of each stage, and the rate through a
crawl worker's signal pool of 1 and N processes (workers.signals.pool; N crawl workers
sharing one queue scale alike) on the same bodies.

--drift N: how far the reduced decode moves PDQ, in bits, from the full-resolution pdqhash on
N generated and ordinary JPEGs of 1024-4000 px; with --browser also from what the victim's
browser computes on the same file (photo.js in headless Chromium, scripts/browser_signals.py).
"""
from __future__ import annotations

import argparse
import glob
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workers.signals import faces  # noqa: E402
from workers.signals.images import PDQ_SIDE, decode_image, decode_reduced, pdq_distance, pdq_hash  # noqa: E402
from workers.signals.media import body_signals, image_pdq  # noqa: E402
from workers.signals.pool import SignalPool  # noqa: E402

SAMPLES = ROOT / "node_modules" / "@vladmandic" / "face-api" / "demo"
LABELLED = ROOT.parent / "shared" / "data" / "faces-verification"
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


def stages(data: bytes, times: dict) -> None:
    """The pipeline's steps one by one, each timed (the same calls body_signals makes)."""
    def timed(name, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        times.setdefault(name, []).append(time.perf_counter() - t)
        return out
    img, scale = timed("decode for PDQ", decode_reduced, data, PDQ_SIDE)
    timed("PDQ variants", image_pdq, img)
    rgb = np.asarray(img)
    boxes = timed("face first pass (MTCNN)", faces._detect_fast, rgb)
    narrowest = min((r - lf for _, r, _, lf in boxes), default=0)
    if boxes and scale < 1.0 and narrowest < faces.DETAIL_FACE:
        side = math.ceil(max(rgb.shape[:2]) * faces.DETAIL_FACE / max(1, narrowest))
        big, big_scale = timed("decode for small faces", decode_reduced, data, side)
        f = big_scale / scale
        boxes = [tuple(int(v * f) for v in b) for b in boxes]
        img = big
    for box in boxes:
        timed("landmarks + descriptor", faces._describe, img, box)


def _warm(_=None) -> int:
    body_signals(photos(1)[0][1])       # load the face models in this process
    return os.getpid()


def _one(args) -> int:
    data, with_faces = args
    return len(body_signals(data, faces=with_faces)["faces"])


def workers_rate(bodies, n: int, with_faces: bool) -> float:
    """Images per second through a crawl worker's signal pool of n processes
    (workers.signals.pool; 1: the worker's own process), as one page's media go through it;
    the models are loaded before the clock starts."""
    with SignalPool(n) as pool:
        pool.map(_warm, range(4 * n))
        t = time.perf_counter()
        pool.map(_one, [(data, with_faces) for _, data in bodies])
        return len(bodies) / (time.perf_counter() - t)


def throughput(args) -> None:
    bodies = photos(args.photos)
    _warm()
    times = {"decode": [], "signals": [], "signals+faces": []}
    stage_times: dict[str, list] = {}
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
            stages(data, stage_times)
    mp = statistics.mean(MEGAPIXELS[i % len(MEGAPIXELS)] for i in range(len(bodies)))
    print(f"{len(bodies)} JPEG photos x {args.rounds} rounds, {mp:.1f} MP on average, one process (one core); "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} (other work on the machine slows "
          f"every line alike: read the ratios)")
    base = sum(times["decode"])
    base_rate = len(times["decode"]) / base
    for name, ts in times.items():
        total = sum(ts)
        rate = len(ts) / total
        print(f"  {name:14s} {rate:6.2f} images/s per core   median {statistics.median(ts) * 1000:7.1f} ms"
              + ("   (the baseline)" if name == "decode" else
                 f"   {rate / base_rate:5.2f}x the decode rate; at an unloaded decode of 72 images/s: "
                 f"{72 * rate / base_rate:5.1f} images/s"))
    print(f"  faces described: {faces_found // args.rounds} in {len(bodies)} photos")
    print("  stages (ms per image, mean over all images; a stage that did not run counts 0):")
    n_images = len(times["decode"])
    for name, ts in stage_times.items():
        print(f"    {name:32s} {1000 * sum(ts) / n_images:7.1f}   ({len(ts)} of {n_images} images)")
    if args.workers > 1:
        for with_faces in (False, True):
            one = workers_rate(bodies, 1, with_faces)
            many = workers_rate(bodies, args.workers, with_faces)
            print(f"  signal pool of a crawl worker, {'with' if with_faces else 'without'} faces: 1 -> {one:6.2f} images/s, "
                  f"{args.workers} -> {many:6.2f} images/s ({many / one:4.2f}x); load average "
                  f"{os.getloadavg()[0]:.2f}")


def drift_corpus(n: int):
    """n JPEGs of 1024-4000 px: ordinary photos (face-api samples and, where present, the
    labelled face set), the match-quality test's generated originals, and generated shapes."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_match_quality import original
    pics = sorted(glob.glob(str(LABELLED / "*.jpg"))) + sorted(str(p) for p in SAMPLES.glob("*.jpg"))
    rng = np.random.default_rng(11)
    sides = [1024, 1280, 1600, 2048, 2560, 3000, 3500, 4000]
    for i in range(n):
        side, k = sides[i % len(sides)], i % 3
        if k == 0:
            src = Image.open(pics[(i // 3) % len(pics)]).convert("RGB")
            aspect = src.width / src.height
        else:
            src = original(rng, i) if k == 1 else generated(i, (640, 480))
            aspect = [4 / 3, 3 / 4, 1, 16 / 9][i % 4]
        size = (side, int(side / aspect)) if aspect >= 1 else (int(side * aspect), side)
        buf = io.BytesIO()
        src.resize(size, Image.BICUBIC).save(buf, "JPEG", quality=int(rng.integers(60, 95)))
        yield ["photo", "generated", "shapes"][k], buf.getvalue()


def drift(args) -> None:
    rows = []           # (kind, bits reduced vs full, bits reduced vs browser, bits full vs browser)
    corpus = list(drift_corpus(args.drift))
    browser = [None] * len(corpus)
    if args.browser:
        sys.path.insert(0, str(ROOT / "scripts"))
        from browser_signals import browser_signals
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, (_, data) in enumerate(corpus):
                p = Path(tmp) / f"{i}.jpg"
                p.write_bytes(data)
                paths.append(p)
            got = browser_signals(paths, faces=False)
        browser = [next((v["hash"] for v in g.get("pdq") or [] if v["variant"] == "full"), None) for g in got]
    t_full = t_reduced = 0.0
    for (kind, data), seen in zip(corpus, browser):
        t = time.perf_counter()
        full = pdq_hash(decode_image(data))["hash"]
        t_full += time.perf_counter() - t
        t = time.perf_counter()
        reduced = pdq_hash(decode_reduced(data, args.side)[0])["hash"]
        t_reduced += time.perf_counter() - t
        rows.append((kind, pdq_distance(reduced, full),
                     pdq_distance(reduced, seen) if seen else None, pdq_distance(full, seen) if seen else None))

    def line(label, values):
        v = np.asarray([x for x in values if x is not None])
        if len(v):
            print(f"  {label:44s} n={len(v):4d}  median {np.median(v):4.1f}  p95 {np.percentile(v, 95):5.1f}  "
                  f"max {v.max():3d} bits")
    print(f"PDQ of JPEGs decoded at the smallest DCT scale keeping >= {args.side} px, {len(rows)} JPEGs of "
          f"1024-4000 px; decode + hash {1000 * t_reduced / len(rows):.1f} ms against "
          f"{1000 * t_full / len(rows):.1f} ms in full ({t_full / t_reduced:.1f}x)")
    line("reduced vs full-resolution pdqhash", [r[1] for r in rows])
    for kind in ("photo", "generated", "shapes"):
        line(f"  {kind}", [r[1] for r in rows if r[0] == kind])
    if args.browser:
        line("reduced (server) vs browser (photo.js, full)", [r[2] for r in rows])
        line("full-resolution server vs browser", [r[3] for r in rows])
        missing = sum(1 for b in browser if b is None)
        if missing:
            print(f"  {missing} files gave no browser hash")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="also measure a signal pool of this many processes (1: skip)")
    ap.add_argument("--drift", type=int, default=0, metavar="N", help="measure PDQ drift on N JPEGs instead")
    ap.add_argument("--browser", action="store_true", help="with --drift: also against the browser (Chromium)")
    ap.add_argument("--side", type=int, default=PDQ_SIDE, help="with --drift: the reduced decode's long side")
    args = ap.parse_args()
    if args.drift:
        drift(args)
    else:
        throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
