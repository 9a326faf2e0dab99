#!/usr/bin/env python3
"""Which signals of her ordinary photo still find a deepfake made from it?

    .venv/bin/python bench/bench_deepfake_signals.py [--cache FILE.json]

A victim who holds no images registers ordinary photos of herself (source photos, DESIGN
§6.3). A deepfake made from a clothed photo keeps her face, hair and the background above
and around her head, and repaints the body. Simulated here on the labelled portraits of
../shared/data/faces-verification: the bottom 30, 40 or 50 % of the picture is repainted
with other content (shapes on a colour), never above 10 % of a face height below her chin
(photos whose face sits too low for that share are left out), then re-encoded (JPEG 85).
For each edit, the signals of the original (registered) against those of the edit (crawled):

  full PDQ          the registered "full" hash against the edit's "full" hash
  any PDQ variant   every registered variant against every crawled variant (what the matcher does)
  top-1:2, top-1:3  PDQ of the top half / third of the picture, on both sides
  head box (dlib)   PDQ of a head-and-shoulders box around the face, the box found by dlib on
                    both sides (an upper bound: the browser's box differs)
  head box (browser box vs dlib box)  the same with the registered side's box from faces.js
  face              faces.js descriptor of the original against dlib's of the edit, at FACE_THRESHOLD

Found = PDQ within 31 bits (quality >= 50 on both sides) / face within FACE_THRESHOLD.
False matches of each PDQ region: the same region of every pair of *different* photos.
"""
from __future__ import annotations

import argparse
import io
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_face_roc as roc  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from workers.matching.index import FACE_THRESHOLD, PDQ_MIN_QUALITY, PDQ_THRESHOLD  # noqa: E402
from workers.signals.faces import describe_faces  # noqa: E402
from workers.signals.images import pdq_distance, pdq_hash, pdq_variants  # noqa: E402

SHARES = (0.3, 0.4, 0.5)


def repaint(im: Image.Image, top: int, seed: int) -> Image.Image:
    out = im.copy()
    w, h = out.size
    rng = np.random.default_rng(seed)
    d = ImageDraw.Draw(out)
    d.rectangle([0, top, w, h], fill=tuple(int(v) for v in rng.integers(60, 230, 3)))
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(top, h))
        d.ellipse([x, y, x + int(rng.integers(30, 250)), y + int(rng.integers(30, 250))],
                  fill=tuple(int(v) for v in rng.integers(40, 240, 3)))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def largest(faces):
    return max(faces, key=lambda f: f["box"]["width"] * f["box"]["height"]) if faces else None


def head_box(img: Image.Image, box: dict) -> Image.Image:
    """Head and shoulders: three face widths wide, from the top of the picture to 1.5 face
    heights below the top of the face."""
    x, y, w, h = (round(box[k]) for k in ("x", "y", "width", "height"))
    cx = x + w / 2
    return img.crop((max(0, int(cx - 1.5 * w)), 0, min(img.width, int(cx + 1.5 * w)), min(img.height, int(y + 2.5 * h))))


def band(img: Image.Image, part: int) -> Image.Image:
    return img.crop((0, 0, img.width, max(1, img.height // part)))


def pdq_found(a: dict, b: dict) -> bool:
    return a["quality"] >= PDQ_MIN_QUALITY and b["quality"] >= PDQ_MIN_QUALITY and \
        pdq_distance(a["hash"], b["hash"]) <= PDQ_THRESHOLD


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path)
    args = ap.parse_args()
    if not roc.DATA.is_dir():
        print(f"skipped: {roc.DATA} is absent")
        return 1
    data = roc.descriptors(roc.photos(), args.cache)
    names = sorted(n for n in roc.IDENTITIES if data["server"].get(n) and data["browser"].get(n))
    originals = {n: Image.open(roc.DATA / n).convert("RGB") for n in names}
    signals = ("full PDQ", "any PDQ variant", "top-1:2", "top-1:3", "head box (dlib)",
               "head box (browser box vs dlib box)", "face")
    found = {s: {share: [] for share in SHARES} for s in signals}
    tried = {share: 0 for share in SHARES}
    for i, n in enumerate(names):
        im = originals[n]
        f, b = largest(data["server"][n]), largest(data["browser"][n])
        chin = f["box"]["y"] + f["box"]["height"]
        reg_variants = pdq_variants(im)
        reg = {"full": reg_variants[0], "top-1:2": pdq_hash(band(im, 2)), "top-1:3": pdq_hash(band(im, 3)),
               "head": pdq_hash(head_box(im, f["box"])), "head-browser": pdq_hash(head_box(im, b["box"]))}
        for share in SHARES:
            top = int(im.height * (1 - share))
            if top < chin + 0.1 * f["box"]["height"]:
                continue
            tried[share] += 1
            ed = repaint(im, top, i)
            ed_variants = pdq_variants(ed)
            e_face = largest(describe_faces(ed))
            found["full PDQ"][share].append(pdq_found(reg["full"], ed_variants[0]))
            found["any PDQ variant"][share].append(any(pdq_found(r, c) for r in reg_variants for c in ed_variants))
            found["top-1:2"][share].append(pdq_found(reg["top-1:2"], pdq_hash(band(ed, 2))))
            found["top-1:3"][share].append(pdq_found(reg["top-1:3"], pdq_hash(band(ed, 3))))
            if e_face is None:
                for s in ("head box (dlib)", "head box (browser box vs dlib box)", "face"):
                    found[s][share].append(False)
                continue
            e_head = pdq_hash(head_box(ed, e_face["box"]))
            found["head box (dlib)"][share].append(pdq_found(reg["head"], e_head))
            found["head box (browser box vs dlib box)"][share].append(pdq_found(reg["head-browser"], e_head))
            d = float(np.linalg.norm(np.asarray(b["descriptor"]) - np.asarray(e_face["descriptor"])))
            found["face"][share].append(d <= FACE_THRESHOLD)

    print(f"{len(names)} labelled portraits; edits per repainted share: "
          + ", ".join(f"{int(100 * s)} %: {tried[s]}" for s in SHARES))
    print(f"{'signal':38s}" + "".join(f"{int(100 * s):>5d} %     " for s in SHARES))
    for s in signals:
        cells = "".join(f"{np.mean(found[s][sh]) if found[s][sh] else float('nan'):6.2f} ({sum(found[s][sh]):2d}/{len(found[s][sh]):2d})"
                        for sh in SHARES)
        print(f"{s:38s}{cells}")

    print("\nFalse matches of a region between different photos (all pairs, quality >= 50 on both):")
    for label, fn in (("full", lambda im: pdq_hash(im)), ("top-1:2", lambda im: pdq_hash(band(im, 2))),
                      ("top-1:3", lambda im: pdq_hash(band(im, 3)))):
        hashes = {n: fn(originals[n]) for n in names}
        pairs = list(itertools.combinations(names, 2))
        false = sum(pdq_found(hashes[a], hashes[b]) for a, b in pairs)
        low = sum(h["quality"] < PDQ_MIN_QUALITY for h in hashes.values())
        print(f"  {label:8s} {false}/{len(pairs)} pairs within {PDQ_THRESHOLD} bits; {low} of {len(names)} hashes below quality 50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
