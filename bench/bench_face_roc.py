#!/usr/bin/env python3
"""The face threshold, calibrated on identity: her browser selfie against the server's
descriptor of a *different* photo of her, and against every other person we can find.

    .venv/bin/python bench/bench_face_roc.py [--cache FILE.json]

Registered side: faces.js in headless Chromium (scripts/browser_signals.py), as her browser
computes it. Crawled side: workers.signals.faces.describe_faces (dlib), as the crawler does.

Data: ../shared/data/faces-verification (ordinary photos of public figures, README there).
Its master.csv labels 21 of the photos (9 people, 38 same-person pairs); the other photos of
the folder are of the same public figures and are labelled below by eye (IDENTITIES; checked
against master.csv, which never contradicts it). `img11_reflection.jpg` is a mirrored copy of
img11 and is left out (a copy, not another photo). Both tables are printed: master.csv only,
and the whole folder. Impostors: every pair of faces of different labelled people, plus the
face-api sample photos (node_modules/@vladmandic/face-api/demo, 6 photos of ~20 people who
are none of the labelled ones): each sample face against every labelled face, and the faces
of one sample photo against each other (across sample photos one person may appear twice,
so those pairs are not counted). No other installed package ships face photos (checked:
.venv, node_modules, /usr/share). Faces a detector found that are no labelled person (a
blurred background blob, a stranger in a group photo) are left out.

Pairs are ordered (browser face of photo A, server face of photo B), A != B. Prints the ROC
(TAR at FAR 1e-2, 1e-3, 1e-4 with the pair counts and the number of false pairs), the largest
threshold with at most 1 false pair in 1,000 and the chosen operating point (FACE_THRESHOLD,
workers/matching/index.py, whose comment says why), the same for dlib
against itself (the crawled-vs-crawled cohort), and the gain from several selfies (leave-one-
out over people with three or more photos: a template of k of her other photos, matched on
its best face). Exit status 1 when the data is absent (skips cleanly outside this workplace).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from workers.matching.index import FACE_THRESHOLD  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "faces-verification"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/faces-verification")
SAMPLES = ROOT / "node_modules" / "@vladmandic" / "face-api" / "demo"
LEFT_OUT = {"img11_reflection.jpg"}

_PEOPLE = {
    "jolie": "img1 img2 img4 img5 img6 img7 img10 img11",
    "aniston": "img3 img12 img53 img54 img55 img56",
    "zuckerberg": "img13 img14 img15 img57 img58",
    "dorsey": "img16 img17 img59 img61 img62",
    "musk": "img18 img19 img67",
    "bezos": "img20 img21",
    "mayer": "img22 img23",
    "pichai": "img24 img25",
    "perry": "img26 img27 img28 img42 img43 img44 img45 img46",
    "damon": "img29 img30 img31 img32 img33",
    "dicaprio": "img34 img35 img36 img37",
    "clooney": "img38 img39 img40 img41",
    "johansson": "img8 img9 img47 img48 img49 img50 img51",
}
IDENTITIES = {f"{f}.jpg": who for who, files in _PEOPLE.items() for f in files.split()}
# Group photos: who is where (x of the face's centre as a share of the width; others unknown).
GROUPS = {"couple.jpg": [(0.24, "jolie"), (0.71, "pitt")],
          "selfie-many-people.jpg": [(0.27, "jolie"), (0.69, "pitt")]}
FARS = (1e-2, 1e-3, 1e-4)
TARGET_FAR = 1e-3


def photos() -> list[Path]:
    own = sorted(p for p in DATA.glob("*.jpg") if p.name not in LEFT_OUT)
    return own + sorted(SAMPLES.glob("sample*.jpg"))


def descriptors(paths, cache: Path | None) -> dict:
    """{"browser": {name: [faces]}, "server": {name: [faces]}, "width": {name: px}}."""
    if cache and cache.is_file():
        return json.loads(cache.read_text())
    from browser_signals import browser_signals
    from PIL import Image

    from workers.signals.faces import describe_faces
    out = {"browser": {}, "server": {}, "width": {}}
    for row in browser_signals(paths):
        if row.get("error"):
            raise SystemExit(f"{row['file']}: {row['error']}")
        out["browser"][Path(row["file"]).name] = [{"box": f["box"], "descriptor": f["descriptor"]} for f in row["faces"]]
    for p in paths:
        with Image.open(p) as im:
            out["server"][p.name] = describe_faces(im)
            out["width"][p.name] = im.width
    if cache:
        cache.write_text(json.dumps(out))
    return out


def _centre(box) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def labelled_faces(data: dict, side: str) -> list[tuple[str, str, np.ndarray]]:
    """(photo, identity, descriptor) for every face we know the person of."""
    out = []
    for name, faces in data[side].items():
        if not faces:
            continue
        if name in IDENTITIES:                  # one person a photo: the largest face is her
            f = max(faces, key=lambda f: f["box"]["width"] * f["box"]["height"])
            out.append((name, IDENTITIES[name], np.asarray(f["descriptor"])))
        elif name in GROUPS:
            w = data["width"][name]
            for f in faces:
                cx = _centre(f["box"])[0] / w
                for at, who in GROUPS[name]:
                    if abs(cx - at) < 0.08:
                        out.append((name, who, np.asarray(f["descriptor"])))
        elif name.startswith("sample"):        # every face its own person, named by position
            ref = data["server"][name] or faces
            for f in faces:
                cx, cy = _centre(f["box"])
                k = min(range(len(ref)), key=lambda i: np.hypot(*np.subtract(_centre(ref[i]["box"]), (cx, cy))))
                near = np.hypot(*np.subtract(_centre(ref[k]["box"]), (cx, cy))) < ref[k]["box"]["width"] / 2
                out.append((name, f"{name}#{k if near else 'b' + str(len(out))}", np.asarray(f["descriptor"])))
    return out


def pair_distances(reg, crawl, master_only=None):
    """Distances of (registered face, crawled face) pairs: (genuine, impostor) arrays."""
    same, other = [], []
    for pa, wa, a in reg:
        for pb, wb, b in crawl:
            if pa == pb:
                continue
            if master_only is not None and not (pa in master_only and pb in master_only):
                continue
            sa, sb = pa.startswith("sample"), pb.startswith("sample")
            if sa and sb and pa != pb:
                continue                        # one person may be in two sample photos
            d = float(np.linalg.norm(a - b))
            (same if wa == wb else other).append(d)
    return np.asarray(same), np.asarray(other)


def roc(same: np.ndarray, other: np.ndarray, title: str) -> dict:
    """TAR at each FAR target; the threshold is the largest distance keeping false pairs within it."""
    print(f"\n{title}: {len(same)} same-person pairs, {len(other)} different-person pairs")
    srt = np.sort(other)
    points = {}
    for far in FARS:
        allowed = int(np.floor(far * len(other)))
        t = float(srt[allowed]) - 1e-6 if allowed < len(srt) else float("inf")
        tar = float(np.mean(same <= t)) if len(same) else float("nan")
        resolvable = far * len(other) >= 1
        points[far] = (t, tar)
        print(f"  FAR {far:.0e}: threshold {t:.3f}  TAR {tar:.3f} ({int(np.sum(same <= t))}/{len(same)}), "
              f"false pairs {int(np.sum(other <= t))}/{len(other)}" + ("" if resolvable else
              f"  [not resolvable: fewer than {1 / far:,.0f} impostor pairs]"))
    return points


def at(same, other, t) -> str:
    return (f"TAR {np.mean(same <= t):.3f} ({int(np.sum(same <= t))}/{len(same)}), false pairs "
            f"{int(np.sum(other <= t))}/{len(other)} (FAR {np.mean(other <= t):.1e})")


def templates(reg, crawl, t, max_selfies=5, seed=0):
    """Several selfies: for each crawled photo of a person with >= 3 photos, templates of k of
    her other photos' browser faces (40 random draws each), matched three ways: on the best face
    (the smallest distance), on the template's centroid (the mean descriptor), and on either.
    False pairs: templates of k photos of one person against every crawled face of others."""
    rng = np.random.default_rng(seed)
    by_person: dict[str, list] = {}
    for p, w, d in reg:
        if not w.startswith("sample"):
            by_person.setdefault(w, []).append((p, d))
    people = {w: v for w, v in by_person.items() if len({p for p, _ in v}) >= 3}

    def scores(tpl, b):
        best = float(np.linalg.norm(tpl - b, axis=1).min())
        cen = float(np.linalg.norm(tpl.mean(axis=0) - b))
        return np.array([best, cen, min(best, cen)])

    rows = []
    for k in range(1, max_selfies + 1):
        hit, total = np.zeros(3), 0
        for pb, wb, b in crawl:
            if wb not in people:
                continue
            pool = [d for p, d in people[wb] if p != pb]
            if len(pool) < k:
                continue
            for _ in range(40):
                tpl = np.stack([pool[i] for i in rng.choice(len(pool), k, replace=False)])
                total += 1
                hit += scores(tpl, b) <= t
        false, tried = np.zeros(3), 0
        for w, faces in by_person.items():
            if len(faces) < k:
                continue
            for _ in range(10):
                tpl = np.stack([faces[i][1] for i in rng.choice(len(faces), k, replace=False)])
                for _, wb, b in crawl:
                    if wb != w:
                        tried += 1
                        false += scores(tpl, b) <= t
        if total:
            rows.append((k, hit / total, total, false, tried))
    print(f"\nSeveral selfies at {t:.3f} (people with >= 3 photos; each crawled photo against "
          f"templates of k of her OTHER photos, 40 draws each): found / false pairs")
    print("   k  templates   best face            centroid             either")
    for k, share, total, false, tried in rows:
        cells = "  ".join(f"{share[i]:.3f} {int(false[i]):3d}/{tried:<6d}" for i in range(3))
        print(f"  {k:2d}  {total:9d}   {cells}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, help="keep the descriptors here between runs (biometric: /tmp only)")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent (the labelled photos live in the workplace's shared data)")
        return 1
    master = list(csv.DictReader(open(DATA / "master.csv")))
    for r in master:            # the eye labels never contradict master.csv
        x, y = IDENTITIES.get(r["file_x"]), IDENTITIES.get(r["file_y"])
        assert (x == y) == (r["Decision"] == "Yes"), r
    data = descriptors(photos(), args.cache)
    reg, crawl = labelled_faces(data, "browser"), labelled_faces(data, "server")
    print(f"faces with a known person: browser {len(reg)}, server {len(crawl)}; "
          f"people {len({w for _, w, _ in reg if not w.startswith('sample')})} labelled + "
          f"{len({w for _, w, _ in reg if w.startswith('sample')})} in the face-api samples")

    in_master = {r["file_x"] for r in master} | {r["file_y"] for r in master}
    s, o = pair_distances(reg, crawl, master_only=in_master)
    roc(s, o, "browser selfie vs server, master.csv photos only")
    print(f"  at {FACE_THRESHOLD} (FACE_THRESHOLD now): {at(s, o, FACE_THRESHOLD)}")

    same, other = pair_distances(reg, crawl)
    points = roc(same, other, "browser selfie vs server, whole folder + face-api samples")
    t = points[TARGET_FAR][0]
    print(f"  largest threshold within 1 false pair in 1,000: {t:.3f}: {at(same, other, t)}")
    print(f"  operating point FACE_THRESHOLD = {FACE_THRESHOLD}: {at(same, other, FACE_THRESHOLD)}")
    for q in (0.45, 0.5, 0.55, 0.6):
        print(f"  at {q}: {at(same, other, q)}")

    ss, so = pair_distances(crawl, crawl)
    roc(ss, so, "server vs server (crawled faces among themselves: the cohort)")
    print(f"  at {FACE_THRESHOLD}: {at(ss, so, FACE_THRESHOLD)}")
    for q in sorted({FACE_THRESHOLD, round(t, 3)}):
        templates(reg, crawl, q)
    return 0


if __name__ == "__main__":
    sys.exit(main())
