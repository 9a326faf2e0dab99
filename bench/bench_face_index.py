"""Face index at scale, and the calibration of its threshold.

    .venv/bin/python bench/bench_face_index.py [--n 1000000] [--queries 200]
    .venv/bin/python bench/bench_face_index.py --calibrate      # the FACE_THRESHOLD figures

Scale: n synthetic 128-d descriptors (Gaussian, spread so that two random descriptors are
about 0.75 apart, like two different people under dlib), near-duplicates planted at 0.05-0.6
from some of them. The index (FAISS IndexIDMap2(IndexFlatL2), exact range search at
FACE_THRESHOLD) against a numpy brute force in the same run: queries per second, the ratio,
recall and precision (both must be 1.0: both are exact).

Calibration: the face-api sample photos (node_modules/@vladmandic/face-api/demo/sample*.jpg),
each also half size, JPEG quality 40, mirrored and rotated 5 degrees, through
workers.signals.faces.describe_faces (dlib). Same face under a transform (each transformed face to
the nearest face of its own original) against faces of different photos; the threshold in
workers/index.py is derived from these figures (see its comment).
"""
import argparse
import io
import itertools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workers.matching.index import FACE_THRESHOLD, FaceIndex  # noqa: E402

SAMPLES = ROOT / "node_modules/@vladmandic/face-api/demo"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def scale(n: int, nq: int, brute_q: int) -> bool:
    rng = np.random.default_rng(7)
    sigma = 0.75 / np.sqrt(2 * 128)
    data = rng.normal(0, sigma, (n, 128)).astype(np.float32)
    centres = rng.choice(n, nq // 2, replace=False)
    offsets = rng.normal(0, 1, (len(centres), 128)).astype(np.float32)
    offsets *= (rng.uniform(0.05, 0.6, len(centres)) / np.linalg.norm(offsets, axis=1))[:, None]
    queries = np.concatenate([data[centres] + offsets, rng.normal(0, sigma, (nq - len(centres), 128)).astype(np.float32)])

    before = rss_mb()
    t = time.perf_counter()
    idx = FaceIndex()
    idx.add(data, list(range(n)))
    build = time.perf_counter() - t
    mem = rss_mb() - before
    t = time.perf_counter()
    got = idx.range(queries)
    index_qps = nq / (time.perf_counter() - t)

    sub = queries[:brute_q]
    norms = (data ** 2).sum(axis=1)
    t = time.perf_counter()
    truth = []
    for q in sub:
        d2 = norms - 2 * data @ q + q @ q
        truth.append(set(np.nonzero(d2 <= FACE_THRESHOLD ** 2)[0].tolist()))
    brute_qps = brute_q / (time.perf_counter() - t)
    found = [set(r for r, _ in got[i]) for i in range(brute_q)]
    pairs = sum(len(t) for t in truth)
    # Float rounding may differ right at the threshold: count disagreements, and how close they were.
    missed = sum(len(truth[i] - found[i]) for i in range(brute_q))
    extra = sum(len(found[i] - truth[i]) for i in range(brute_q))
    print(f"n={n:,} descriptors: build {build:.2f} s, memory +{mem:.0f} MiB")
    print(f"  index  {index_qps:,.1f} queries/s (exact L2 range search at {FACE_THRESHOLD})")
    print(f"  brute  {brute_qps:,.1f} queries/s (numpy: one matrix-vector product per query)")
    print(f"  ratio  {index_qps / brute_qps:.1f}x")
    print(f"  recall {1 - missed / pairs if pairs else 1:.4f} over {pairs} pairs; extra hits {extra}")
    return missed == 0


def calibrate() -> None:
    from PIL import Image, ImageOps

    from workers.signals.faces import describe_faces
    same, diff, origs = [], [], []
    for path in sorted(SAMPLES.glob("sample*.jpg")):
        img = Image.open(path).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=40)
        renditions = {"half": img.resize((img.width // 2, img.height // 2)), "mirror": ImageOps.mirror(img),
                      "rot5": img.rotate(5, expand=True, fillcolor=(255, 255, 255)),
                      "jpeg40": Image.open(io.BytesIO(buf.getvalue())).convert("RGB")}
        own = [np.asarray(f["descriptor"]) for f in describe_faces(img)]
        origs += [(path.name, v) for v in own]
        for r in renditions.values():
            for f in describe_faces(r):
                same.append(min(np.linalg.norm(np.asarray(f["descriptor"]) - v) for v in own))
    for (_, a), (_, b) in itertools.combinations(origs, 2):
        diff.append(float(np.linalg.norm(a - b)))
    same, diff = np.array(same), np.array(diff)
    print(f"{len(origs)} faces in {len(list(SAMPLES.glob('sample*.jpg')))} photos")
    print(f"same face under transforms ({len(same)}): max {same.max():.3f}, mean {same.mean():.3f}, "
          f"95th pct {np.percentile(same, 95):.3f}")
    print(f"different faces ({len(diff)}): min {diff.min():.3f}, 5th pct {np.percentile(diff, 5):.3f}, "
          f"mean {diff.mean():.3f}; next smallest {np.sort(diff)[1:4].round(3).tolist()}")
    print(f"FACE_THRESHOLD = {FACE_THRESHOLD}: same-face recall {np.mean(same <= FACE_THRESHOLD):.3f}, "
          f"different faces within it {int((diff <= FACE_THRESHOLD).sum())} of {len(diff)}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--brute-queries", type=int, default=50)
    ap.add_argument("--calibrate", action="store_true")
    args = ap.parse_args()
    if args.calibrate:
        calibrate()
        return 0
    return 0 if scale(args.n, args.queries, args.brute_queries) else 1


if __name__ == "__main__":
    sys.exit(main())
