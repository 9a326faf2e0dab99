#!/usr/bin/env python3
"""Faces the crawler can see: the fast path (MTCNN's first pass, whose boxes seed dlib's
landmarks) against the full path (HOG over the whole picture), and both against where the
faces really are.

    .venv/bin/python bench/bench_face_detection.py [--per-set 24]

Sets (face photos only: the labelled set in ../shared/data/faces-verification where present,
and the face-api sample photos):
- photos: every face photo as it is. No ground truth: the full path's faces are the reference,
  and the fast path must find each of them (its recall), with the descriptor it gives.
- small: the largest face of a photo scaled to 40, 56 or 80 px and pasted on a generated
  1280 x 960 picture; the pasted place is the truth.
- turned: the face at about 120 px, turned in the picture plane by +-15, +-30 or +-45 degrees.
- video: the faces of the small and turned sets as frames of an H.264 video, read back by the
  server's frame reader (workers.signals.videos.video_frames) as the crawler reads them.
Prints, per set and path: faces found, detection rate against the truth, the fast path's recall
against the full path, and milliseconds per image (the full path's time is the baseline in the
same run).
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workers.signals import faces  # noqa: E402

SAMPLES = ROOT / "node_modules" / "@vladmandic" / "face-api" / "demo"
LABELLED = ROOT.parent / "shared" / "data" / "faces-verification"


def background(rng, size=(1280, 960)) -> Image.Image:
    img = Image.new("RGB", (160, 120), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(30):
        x, y, w, h = (int(v) for v in rng.integers(0, 160, 4))
        d.rectangle([x, y, x + w // 3, y + h // 3], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img.filter(ImageFilter.GaussianBlur(1)).resize(size, Image.BICUBIC)


def matches(box, others, min_iou=0.3) -> bool:
    return any(_iou(box, o) >= min_iou for o in others)


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def contains_centre(box, truth) -> bool:
    """A found box holds the true face's centre and is of a similar size (turned faces: the
    detector's upright box and the turned square do not overlap much, their centres agree)."""
    x, y, w, h = box
    tx, ty, tw, th = truth
    cx, cy = tx + tw / 2, ty + th / 2
    return x <= cx <= x + w and y <= cy <= y + h and 0.4 < w / tw < 2.5


def run(rgb, detector):
    t = time.perf_counter()
    found = faces.describe_faces(rgb, detector=detector)
    return found, time.perf_counter() - t


def face_photos():
    paths = sorted(LABELLED.glob("*.jpg")) if LABELLED.is_dir() else []
    paths += sorted(SAMPLES.glob("sample*.jpg"))
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def largest_face(rgb):
    got = faces.describe_faces(rgb, detector="full")
    return max(got, key=lambda f: f["box"]["width"])["box"] if got else None


def pasted(rng, rgb, box, face_px, angle=0.0):
    """The photo scaled so the face is face_px wide, turned by angle, cut to the face and its
    surroundings, pasted on a generated picture: (picture, true face box)."""
    s = face_px / box["width"]
    img = Image.fromarray(rgb)
    img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
    fx, fy, fw, fh = (v * s for v in (box["x"], box["y"], box["width"], box["height"]))
    m = 1.2 * fw
    cut = img.crop((int(max(0, fx - m)), int(max(0, fy - m)), int(min(img.width, fx + fw + m)),
                    int(min(img.height, fy + fh + m))))
    cx, cy = fx + fw / 2 - max(0, int(fx - m)), fy + fh / 2 - max(0, int(fy - m))
    if angle:
        mask = Image.new("L", cut.size, 255).rotate(angle, expand=True)
        w0, h0 = cut.size
        cut = cut.rotate(angle, resample=Image.BICUBIC, expand=True)
        # the face centre after a turn about the cut's centre, in the expanded cut
        a = math.radians(-angle)
        dx, dy = cx - w0 / 2, cy - h0 / 2
        cx = cut.width / 2 + dx * math.cos(a) - dy * math.sin(a)
        cy = cut.height / 2 + dx * math.sin(a) + dy * math.cos(a)
    else:
        mask = None
    canvas = background(rng)
    x = int(rng.integers(0, max(1, canvas.width - cut.width)))
    y = int(rng.integers(0, max(1, canvas.height - cut.height)))
    canvas.paste(cut, (x, y), mask)
    truth = (x + cx - fw / 2, y + cy - fh / 2, fw, fh)
    return np.asarray(canvas), truth


def video_frames_of(pictures):
    """Write the pictures as an H.264 video (one a second) and read it back as the crawler does."""
    import av

    from workers.signals.videos import video_frames
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1)
        h, w = pictures[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "26"}
        for rgb in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return [f.rgb for f in video_frames(buf.getvalue(), every=1.0, max_frames=len(pictures))]


def report(name, rows, truth_known):
    n = len(rows)
    full_t = sum(r["full_t"] for r in rows)
    fast_t = sum(r["fast_t"] for r in rows)
    full_faces = sum(len(r["full"]) for r in rows)
    kept = sum(sum(1 for b in r["full"] if matches(b, r["fast"])) for r in rows)
    line = (f"  {name:8s} {n:4d} images  full path {full_faces:3d} faces {1000 * full_t / n:7.0f} ms/img   "
            f"fast path {sum(len(r['fast']) for r in rows):3d} faces {1000 * fast_t / n:7.0f} ms/img "
            f"({full_t / fast_t:4.1f}x faster)   fast finds {kept}/{full_faces} of the full path's faces")
    if truth_known:
        hit_full = sum(any(contains_centre(b, r["truth"]) for b in r["full"]) for r in rows)
        hit_fast = sum(any(contains_centre(b, r["truth"]) for b in r["fast"]) for r in rows)
        line += f"   detection rate: full {hit_full}/{n}, fast {hit_fast}/{n}"
    print(line)
    return kept, full_faces


def evaluate(rgb, truth=None):
    full, full_t = run(rgb, "full")
    fast, fast_t = run(rgb, "fast")
    box = lambda f: (f["box"]["x"], f["box"]["y"], f["box"]["width"], f["box"]["height"])  # noqa: E731
    dists = []
    for f in full:
        near = [g for g in fast if _iou(box(f), box(g)) >= 0.3]
        if near:
            dists.append(min(faces.face_distance(f["descriptor"], g["descriptor"]) for g in near))
    return {"full": [box(f) for f in full], "fast": [box(f) for f in fast], "full_t": full_t,
            "fast_t": fast_t, "truth": truth, "dists": dists}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-set", type=int, default=24, help="generated images per set")
    args = ap.parse_args()
    rng = np.random.default_rng(19)
    photos = face_photos()
    if not photos:
        print("no face photos (node_modules and ../shared absent): nothing to measure")
        return 0
    faces.describe_faces(photos[0][1])          # load the models outside the timing
    results = {}
    results["photos"] = [evaluate(rgb) for _, rgb in photos]
    sources = [(rgb, b) for _, rgb in photos if (b := largest_face(rgb)) is not None and b["width"] >= 60]
    small, turned = [], []
    for i in range(args.per_set):
        rgb, box = sources[i % len(sources)]
        small.append(pasted(rng, rgb, box, (40, 56, 80)[i % 3]))
        turned.append(pasted(rng, rgb, box, 120, (15, -15, 30, -30, 45, -45)[i % 6]))
    results["small"] = [evaluate(p, t) for p, t in small]
    results["turned"] = [evaluate(p, t) for p, t in turned]
    by_angle: dict[str, list] = {}
    frames = video_frames_of([p for p, _ in small + turned])
    results["video"] = [evaluate(f, t) for f, (_, t) in zip(frames, small + turned)]
    print(f"Face detection: fast path (MTCNN's first pass, its boxes seeding dlib's landmarks) against the full path "
          f"(HOG over the whole picture at <= {faces.DETECT_MAX_SIDE} px, upsampled {faces.UPSAMPLE}x)")
    kept = total = 0
    for name, rows in results.items():
        k, t = report(name, rows, name != "photos")
        kept, total = kept + k, total + t
    for i, angle in enumerate((15, -15, 30, -30, 45, -45)):
        rows = results["turned"][i::6]
        for path in ("full", "fast"):
            by_angle.setdefault(path, []).append(
                f"{angle:+d}: {sum(any(contains_centre(b, r['truth']) for b in r[path]) for r in rows)}/{len(rows)}")
    for i, px in enumerate((40, 56, 80)):
        rows = results["small"][i::3]
        print(f"    small {px} px: full {sum(any(contains_centre(b, r['truth']) for b in r['full']) for r in rows)}"
              f"/{len(rows)}, fast {sum(any(contains_centre(b, r['truth']) for b in r['fast']) for r in rows)}"
              f"/{len(rows)}")
    for path, parts in by_angle.items():
        print(f"    turned, {path}: " + ", ".join(parts))
    dists = [d for rows in results.values() for r in rows for d in r["dists"]]
    print(f"  fast path recall against the full path, all sets: {kept}/{total} = {kept / max(1, total):.1%}")
    for name, rows in results.items():
        missed = [i for i, r in enumerate(rows) if any(not matches(b, r["fast"]) for b in r["full"])]
        if missed:
            print(f"    {name}: the fast path misses a full-path face in image(s) "
                  + ", ".join(photos[i][0] if name == "photos" else str(i) for i in missed))
    if dists:
        print(f"  descriptor distance, the same face by both paths: median {np.median(dists):.3f}, "
              f"p95 {np.percentile(dists, 95):.3f}, max {max(dists):.3f} (n={len(dists)})")
        worst = sorted(((d, name, i) for name, rows in results.items() for i, r in enumerate(rows)
                        for d in r["dists"]), reverse=True)[:4]
        print("    largest: " + ", ".join(f"{name} {photos[i][0] if name == 'photos' else i} {d:.3f}"
                                       for d, name, i in worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
