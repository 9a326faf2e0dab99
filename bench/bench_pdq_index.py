"""PDQ index at scale: build time, memory, queries per second and recall at 31 bits,
against a numpy popcount brute force and ThreatExchange's PDQ indexes, measured in the same
run on the same hashes (the ratios are the point).

    .venv/bin/python bench/bench_pdq_index.py [--n 1000000] [--queries 2000] [--ten-million]
        [--data random|structured|both] [--threads 2] [--no-threatexchange]

Two kinds of hashes:
- random: uniformly random 256-bit codes (the best case for hashing: balanced, independent bits);
- structured: PDQ-like codes: 256 "coefficients" are a random projection of a 48-d latent per
  image with a decaying spectrum plus noise, each code thresholded at its own median (PDQ's
  rule), so bits are balanced per hash but strongly correlated across hashes (distances
  between unrelated codes: mean 128, sd ~22 bits, against sd 8 for random codes), which skews
  the hash buckets: more candidates per query than on random codes. Whether real PDQ hashes
  are more or less skewed than this is not known here: it is a stress case, not a model.
Both have near-duplicates planted at 0-40 bits from some hashes (1 in 10 of the index); queries
are near-duplicates (0-40 bits) of indexed hashes plus fresh codes of the same kind that match
little. Recall is the share of brute-force pairs within 31 bits that the index returns (it
must be 1.0), precision the share of index hits brute force confirms (exact distances: 1.0).

Queries per second are given three ways: one query per call ("single", what one crawled image
asks), 256 per call ("batched", a crawled page's media at once) on one thread, and batched
with the index splitting each batch over --threads threads (PDQIndex.threads; the compiled
search loops release the GIL, so two threads use two cores). Memory is the RSS growth over the
build and what tracemalloc counts (numpy reports its buffers to it). Each hash's owner is an int (a
signal) and its group an int (the case: 20 hashes each); removing a case is timed.
ThreatExchange's indexes run in a process of their own (see `threatexchange`); at 10 M only
its multi-hash index (its flat one would take 10 GB of floats).
"""
import argparse
import gc
import multiprocessing
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workers.matching.index import PDQ_THRESHOLD, PDQIndex, hamming_brute  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def flip_many(codes, counts, rng):
    """Each code with counts[i] distinct random bits flipped."""
    out = codes.copy()
    for i, n in enumerate(counts):
        for b in rng.choice(256, int(n), replace=False):
            out[i, b // 8] ^= 1 << (7 - b % 8)
    return out


class Structured:
    """PDQ-like correlated codes (see the module docstring)."""

    def __init__(self, rng, dim=48):
        self.rng = rng
        self.w = (rng.normal(size=(dim, 256)) / np.sqrt(np.arange(1, dim + 1))[:, None]).astype(np.float32)

    def __call__(self, n, chunk=250_000):
        out = np.empty((n, 32), np.uint8)
        for s in range(0, n, chunk):
            k = min(chunk, n - s)
            z = self.rng.standard_normal((k, self.w.shape[0]), dtype=np.float32)
            c = z @ self.w + 0.35 * self.rng.standard_normal((k, 256), dtype=np.float32)
            med = np.partition(c, 127, axis=1)[:, 127:128]
            out[s:s + k] = np.packbits(c > med, axis=1)
        return out


def make_data(kind, n, nq, rng):
    gen = Structured(rng) if kind == "structured" else (lambda k: rng.integers(0, 256, (k, 32), dtype=np.uint8))
    codes = gen(n)
    dup = rng.choice(n, n // 10, replace=False)       # near-duplicates inside the index
    src = rng.choice(n, len(dup))
    codes[dup] = flip_many(codes[src], rng.integers(0, 41, len(dup)), rng) if n <= 2_000_000 else \
        _flip_fast(codes[src], rng)
    centres = rng.choice(n, nq // 2, replace=False)
    near = flip_many(codes[centres], rng.integers(0, 41, len(centres)), rng)
    queries = np.concatenate([near, gen(nq - len(near))])
    rng.shuffle(queries)
    return codes, queries


def _flip_fast(codes, rng):
    """Vectorised near-duplicates for large n: XOR with a random mask of 0-40 bits (with repeats)."""
    out = codes.copy()
    k = rng.integers(0, 41, len(codes))
    for j in range(40):
        rows = np.flatnonzero(k > j)
        bits = rng.integers(0, 256, len(rows))
        out[rows, bits // 8] ^= (1 << (7 - bits % 8)).astype(np.uint8)
    return out


def brute(queries, codes, chunk=250_000):
    """Exact neighbours within PDQ_THRESHOLD, numpy popcount over all codes."""
    hits = [set() for _ in range(len(queries))]
    for start in range(0, len(codes), chunk):
        d = hamming_brute(queries, codes[start:start + chunk])
        for qi, rows in enumerate(d):
            for r in np.nonzero(rows <= PDQ_THRESHOLD)[0]:
                hits[qi].add(start + int(r))
    return hits


def threatexchange(codes, queries, truth, threads: int, flat: bool) -> list[dict]:
    """ThreatExchange's PDQ indexes on the same data, through their public classes: PDQIndex
    (FAISS IndexBinaryMultiHash, 16 tables of 16 bits, 1 flip: exact at 31) and, when `flat`,
    PDQIndex2 (their newer default: FAISS IndexFlatL2 over 256 floats a hash, brute force).
    Hashes go in as hex strings, as those classes take them. Memory: RSS growth over the build
    (what their add converts along the way may stay in it, so an upper bound)."""
    import faiss
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex as TxPDQIndex
    from threatexchange.signal_type.pdq.pdq_index2 import PDQIndex2 as TxPDQIndex2
    faiss.omp_set_num_threads(threads)
    hexes = [c.tobytes().hex() for c in codes]
    qhex = [c.tobytes().hex() for c in queries]
    out = []
    for name, make in (("ThreatExchange PDQIndex (FAISS multi-hash)", TxPDQIndex),
                       ("ThreatExchange PDQIndex2 (FAISS flat)", TxPDQIndex2)):
        if make is TxPDQIndex2 and not flat:
            continue
        gc.collect()
        before = rss_mb()
        t = time.perf_counter()
        tx = make(entries=((h, i) for i, h in enumerate(hexes)))
        build_s = time.perf_counter() - t
        mem_mb = rss_mb() - before
        single_n = min(len(qhex), 100 if make is TxPDQIndex2 else 300)
        t = time.perf_counter()
        found = [{m.metadata for m in tx.query(h)} for h in qhex[:single_n]]
        single_s = time.perf_counter() - t
        recall_n = min(len(truth), single_n)
        pairs = sum(len(truth[i]) for i in range(recall_n))
        hit = sum(len(truth[i] & found[i]) for i in range(recall_n))
        r = {"name": name, "build_s": build_s, "mem_mb": mem_mb, "single_qps": single_n / single_s,
             "recall": hit / pairs if pairs else 1.0, "pairs": pairs, "batched_qps": None}
        if make is TxPDQIndex:           # its batched call: one FAISS range search for many
            t = time.perf_counter()
            for at in range(0, len(qhex), 256):
                tx.index.search_with_distance_in_result(qhex[at:at + 256], 31)
            r["batched_qps"] = len(qhex) / (time.perf_counter() - t)
        out.append(r)
        del tx
        gc.collect()
    return out


def run(kind: str, n: int, nq: int, brute_q: int, threads: int, seed: int = 1, tx: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    codes, queries = make_data(kind, n, nq, rng)
    owners = np.arange(n)
    groups = owners // 20

    gc.collect()
    before = rss_mb()
    tracemalloc.start()
    t = time.perf_counter()
    idx = PDQIndex()
    idx.add(codes, owners, groups=groups)
    build_s = time.perf_counter() - t
    traced, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    mem_mb = rss_mb() - before

    idx.threads = 1
    idx.search(queries[:8])              # compile the search loops first (numba, cached after)
    t = time.perf_counter()
    got = [[] for _ in range(nq)]
    for at in range(0, nq, 256):
        qi, lab, _, d = idx.search(queries[at:at + 256])
        for i, o, dd in zip(qi.tolist(), lab.tolist(), d.tolist()):
            got[at + i].append((o, dd))
    batched_s = time.perf_counter() - t
    single_n = min(nq, 500)
    t = time.perf_counter()
    for i in range(single_n):
        idx.search(queries[i:i + 1])
    single_s = time.perf_counter() - t
    threaded_qps = None
    if threads > 1:                      # the index splits each batch over its threads
        idx.threads = threads
        t = time.perf_counter()
        for at in range(0, nq, 256):
            idx.search(queries[at:at + 256])
        threaded_qps = nq / (time.perf_counter() - t)

    sub = queries[:brute_q]
    t = time.perf_counter()
    truth = brute(sub, codes)
    brute_s = time.perf_counter() - t
    expected = sum(len(h) for h in truth)
    dist = {}
    returned = [set() for _ in range(brute_q)]
    for i in range(brute_q):
        for r, d in got[i]:
            returned[i].add(r)
            dist[i, r] = d
    found = sum(len(truth[i] & returned[i]) for i in range(brute_q))
    extra = sum(len(returned[i] - truth[i]) for i in range(brute_q))
    check = [(i, r) for i in range(brute_q) for r in truth[i]][:2000]
    wrong_d = sum(int(hamming_brute(sub[i:i + 1], codes[r:r + 1])[0, 0]) != dist.get((i, r), -1) for i, r in check)
    gone_case = int(groups[n // 2])
    t = time.perf_counter()
    removed = idx.drop_group(gone_case)
    remove_s = time.perf_counter() - t
    gone = np.flatnonzero(groups == gone_case)
    assert removed == len(gone)
    assert not any(int(g) == gone_case for g in idx.search(codes[gone])[2])
    segments = [(s.n, s.layout) for s in idx._segments]
    del idx
    theirs = []
    if tx:      # in a fresh process, so its memory growth is its own
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            theirs = pool.apply(threatexchange, (codes, queries, truth, threads, n <= 2_000_000))
    return {"kind": kind, "n": n, "build_s": build_s, "theirs": theirs, "remove_s": remove_s, "mem_mb": mem_mb,
            "traced_mb": traced / 2**20, "traced_peak_mb": traced_peak / 2**20,
            "batched_qps": nq / batched_s, "single_qps": single_n / single_s, "threaded_qps": threaded_qps,
            "threads": threads, "brute_qps": brute_q / brute_s, "recall": found / expected if expected else 1.0,
            "pairs": expected, "extra": extra, "wrong_d": wrong_d,
            "segments": segments}


def report(r: dict) -> None:
    print(f"[{r['kind']}] n={r['n']:,}: build {r['build_s']:.1f} s; memory RSS +{r['mem_mb']:.0f} MiB "
          f"({r['mem_mb'] * 2**20 / r['n']:.0f} bytes/hash), tracemalloc {r['traced_mb']:.0f} MiB held, "
          f"{r['traced_peak_mb']:.0f} MiB peak while building; segments {r['segments']}")
    print(f"  remove one case (20 hashes) {r['remove_s'] * 1000:.1f} ms")
    b = r["brute_qps"]
    print(f"  index single   {r['single_qps']:,.0f} queries/s  ({r['single_qps'] / b:,.0f}x brute force)  one query per call")
    print(f"  index batched  {r['batched_qps']:,.0f} queries/s  ({r['batched_qps'] / b:,.0f}x brute force)  256 per call, 1 thread")
    if r["threaded_qps"]:
        print(f"  index batched  {r['threaded_qps']:,.0f} queries/s  ({r['threaded_qps'] / b:,.0f}x brute force)  "
              f"256 per call, {r['threads']} threads")
    print(f"  brute          {b:,.1f} queries/s (numpy popcount over every hash, same run)")
    print(f"  recall {r['recall']:.4f} over {r['pairs']} brute-force pairs within {PDQ_THRESHOLD}; "
          f"hits not confirmed by brute force: {r['extra']}; wrong distances: {r['wrong_d']}")
    for x in r["theirs"]:
        batched = f", batched {x['batched_qps']:,.0f} queries/s ({r['threaded_qps'] or r['batched_qps']:,.0f} ours: " \
                  f"{(r['threaded_qps'] or r['batched_qps']) / x['batched_qps']:.1f}x)" if x["batched_qps"] else ""
        print(f"  {x['name']}: build {x['build_s']:.1f} s, RSS +{x['mem_mb']:.0f} MiB, single "
              f"{x['single_qps']:,.0f} queries/s (ours {r['single_qps'] / x['single_qps']:.1f}x){batched}, "
              f"recall {x['recall']:.4f} over {x['pairs']} pairs")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--brute-queries", type=int, default=200)
    ap.add_argument("--data", choices=("random", "structured", "both"), default="both")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-small", action="store_true", help="skip the n/10 run")
    ap.add_argument("--ten-million", action="store_true", help="also build 10M (~1.3 GiB, a few minutes each)")
    ap.add_argument("--no-threatexchange", action="store_true", help="skip ThreatExchange's indexes")
    args = ap.parse_args()
    print(f"multi-index hashing (workers.matching.index.PDQIndex); {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.2f} at start")
    ok = True
    for kind in (("random", "structured") if args.data == "both" else (args.data,)):
        sizes = ([] if args.skip_small else [max(args.n // 10, 1000)]) + [args.n]
        if args.ten_million:
            sizes.append(10_000_000)
        for n in sizes:
            bq = args.brute_queries if n <= 2_000_000 else max(20, args.brute_queries // 10)
            r = run(kind, n, args.queries, bq, args.threads, tx=not args.no_threatexchange)
            report(r)
            ok = ok and r["recall"] == 1.0 and r["extra"] == 0 and r["wrong_d"] == 0
            gc.collect()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
