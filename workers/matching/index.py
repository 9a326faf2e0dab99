"""The in-memory match indexes: PDQ, exact file hashes, vPDQ and faces.

Everything here lives only in the memory of the matcher process (workers/match.py); nothing
is logged, written or sent anywhere. Signals come in as the §6.3 payload dicts of a case and
go out of memory when the case is removed.

- **PDQ**: multi-index hashing (`PDQIndex`), numpy arrays walked by compiled loops
  (workers/pdq_kernel.py). Each large segment of hashes has 11 tables over disjoint sets of up
  to 23 bits each, probed within 2 bit flips: if two 256-bit hashes are within 31 bits, the
  per-table distances sum to at most 31 < 11 x 3, so some table is within 2 flips (pigeonhole)
  and the range search finds every hash within 31 bits: full recall, with exact distances
  from a popcount over the candidates. Smaller segments use 16 tables of 16 bits within 1
  flip (16 x 2 = 32 > 31), the smallest are scanned. Verified against a numpy brute force in
  tests/workers/matching/test_index.py and bench/bench_pdq_index.py. Tables are flat arrays of two-row slots
  per bucket with an overflow list, codes one contiguous array, owners and cases int arrays:
  about 140 bytes a hash at 10M. Registered hashes with quality < 50 are not indexed, query
  hashes with quality < 50 are not asked (Meta's PDQ rule).
- **Exact hashes**: a dict per type (sha256, md5) from hash to the (case, item) holding it.
- **vPDQ**: every distinct frame hash (quality >= 50) of every registered video goes into a
  second PDQ index; a query video's frames find candidate videos there, and each candidate
  is then compared as a bag of frames: a match when >= 80 % of the query's frames are within
  31 bits of some frame of the registered video and >= 80 % of the registered video's frames
  within 31 bits of some query frame; identical frame hashes count once, frames below
  quality 50 are left out (Meta's vPDQ rule, the same as `workers.signals.videos.vpdq_match`).
- **Stills and videos, across**: a crawled image's PDQ hashes are also looked up among the
  registered videos' frames (a screenshot or thumbnail of her video), and a crawled video's
  frames among the registered images' hashes (her photo shown in a video, as compilations
  do): both are "frame" candidates at the PDQ threshold, a video side's second included.
- **Faces**: 128-d dlib descriptors in an exact L2 index (`IndexIDMap2(IndexFlatL2)`), range
  search at FACE_THRESHOLD (see its comment for the calibration). A case's faces (several
  selfies, source photos) are one template matched on its best face; each candidate is also
  ranked against a cohort of other people's crawled faces (`FaceCohort`).

Removal is immediate: when `remove_case` returns, no query finds the case and its codes are
out of the index's memory (the PDQ rows are zeroed in place, their table entries unlinked and
marked dead, and a segment more than a quarter dead is rebuilt without them; the face index
removes its rows in place, the dicts drop them).
"""
from __future__ import annotations

import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import faiss
import numpy as np

from workers.matching import pdq_kernel

PDQ_BITS = 256
PDQ_THRESHOLD = 31            # bits: a match at distance <= 31 (Meta)
PDQ_MIN_QUALITY = 50          # hashes of lower quality say little and are not matched
VPDQ_SHARE = 0.8              # both sides: this share of frames within PDQ_THRESHOLD

# Face threshold, calibrated on identity by `bench/bench_face_roc.py`: her selfie as her browser
# describes it (faces.js in Chromium) against the server's dlib descriptor of a *different*
# photo of her, on ../shared/data/faces-verification (14 people, 316 ordered same-person pairs)
# and 6,570 different-person pairs (those people and the 22 faces of the face-api samples):
#   0.45 (the old value, from copies of one photo): 80.7 % of same-person pairs, 0 false
#   0.52: 95.6 % (302/316), 1 false pair in 6,570 (1.5e-4)   <- chosen
#   0.56: 98.1 % (310/316), 6 in 6,570 (9.1e-4: the largest threshold within 1e-3)
# 0.52 and not 0.56 because several selfies multiply the chances of a false pair (the case
# matches on its best face): with 5 selfies 0.52 keeps false pairs at 1.8e-3 a crawled face
# against 7e-3 at 0.56, while 2 selfies already find 98.6 % (bench, "several selfies"). Every
# false pair there is a look-alike (Damon/DiCaprio, Pitt/Dorsey); the cohort rank (FaceCohort)
# puts such a candidate below better ones. Celebrity portraits are sharper than crawled
# photos: real recall is lower. Faces only ever raise a candidate for review: a face alone
# stays below the flag line in workers/matching/confidence.py.
FACE_THRESHOLD = 0.52
FACE_DIM = 128

# Multi-index hashing layouts (tables, bits per table, bit flips probed per table). The tables
# take disjoint sets of the hash's bits; if two hashes are within d bits, the per-table distances
# sum to at most d, so when tables * (flips + 1) > d some table is within `flips` bits: probing
# every key within `flips` bits in every table finds every hash within d (pigeonhole). Bits left
# out of every table (11 x 23 = 253 < 256) only make the sum smaller, so the bound still holds.
#   16 x 16 bits, 1 flip: 16 * 2 = 32 > 31; 272 probes a query, ~S/240 candidates (small segments)
#   11 x b bits (b <= 23), 2 flips: 11 * 3 = 33 > 31; one table at 1 flip still gives 32 > 31
#   (_Segment.masks_per_table), so 10 * (1 + b + b(b-1)/2) + 1 + b probes (2,784 at b = 23),
#   ~probes * S / 2**b candidates (3,300 at 10M): the large segments.
_SMALL_LAYOUT = (16, 16, 1)
_LARGE_TABLES, _LARGE_FLIPS, _LARGE_MAX_BITS = 11, 2, 23
_BRUTE_BELOW = 8192            # segments smaller than this are scanned, not hashed
_SLOT_BYTES_PER_ROW = 192      # memory allowed for a segment's table slots, per hash
_DECORRELATE_FROM = 50_000     # segments this large choose their tables' bits from the data


def codes_of(hexes) -> np.ndarray:
    """PDQ hexes (bit 0 the most significant bit) as (n, 32) uint8 codes."""
    if not hexes:
        return np.zeros((0, PDQ_BITS // 8), np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hexes)), dtype=np.uint8).reshape(-1, PDQ_BITS // 8).copy()


def hamming_brute(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Exact Hamming distances (len(queries), len(codes)) by numpy popcount: the baseline."""
    q = queries.view(np.uint64).reshape(len(queries), -1)
    c = codes.view(np.uint64).reshape(len(codes), -1)
    out = np.zeros((len(q), len(c)), np.int32)
    for w in range(q.shape[1]):
        out += np.bitwise_count(q[:, w][:, None] ^ c[:, w][None, :])
    return out


def _columns(codes: np.ndarray, tables: int, bits: int, sample: int = 1 << 16) -> np.ndarray:
    """Which bits each table takes (disjoint sets, so the pigeonhole bound holds).

    Correlated bits in one table crowd its buckets (more candidates a query); PDQ bits are
    correlated. From a sample of the segment's codes, bits are dealt one by one, least
    correlated first, each to the table where it adds the least squared correlation; the
    256 - tables * bits most correlated bits are left out. Small segments take bits in order."""
    if len(codes) < _DECORRELATE_FROM or tables * bits >= PDQ_BITS:
        return np.arange(tables * bits).reshape(tables, bits)
    rows = np.random.default_rng(0).choice(len(codes), min(sample, len(codes)), replace=False)
    b = np.unpackbits(codes[np.sort(rows)], axis=1).astype(np.float32) * 2 - 1
    b -= b.mean(axis=0)
    sd = np.sqrt((b * b).mean(axis=0)) + 1e-6
    corr2 = ((b.T @ b) / len(b) / sd[:, None] / sd[None, :]) ** 2
    np.fill_diagonal(corr2, 0)
    load = np.zeros((tables, PDQ_BITS))         # load[t, j]: squared correlation of bit j with table t
    cols = [[] for _ in range(tables)]
    for bit in np.argsort(corr2.sum(axis=1), kind="stable"):
        open_ = [t for t in range(tables) if len(cols[t]) < bits]
        if not open_:
            break
        t = min(open_, key=lambda t: (load[t, bit], len(cols[t])))
        cols[t].append(int(bit))
        load[t] += corr2[bit]
    return np.array([sorted(c) for c in cols])


def _flip_masks(bits: int, flips: int) -> np.ndarray:
    out = [0]
    for k in range(1, flips + 1):
        out.extend(sum(1 << i for i in c) for c in itertools.combinations(range(bits), k))
    return np.asarray(out, np.int64)


def _choose_layout(n: int):
    """The cheapest exact layout for a segment of n hashes (None: scan it), by probes plus
    1.5 x expected candidates on uniform hashes, within the slots' memory allowance."""
    if n < _BRUTE_BELOW:
        return None
    tables, bits, flips = _SMALL_LAYOUT
    probes = tables * len(_flip_masks(bits, flips))
    best, best_cost = _SMALL_LAYOUT, probes + 1.5 * probes * n / 2 ** bits
    for bits in range(16, _LARGE_MAX_BITS + 1):
        if _LARGE_TABLES * (8 << bits) > _SLOT_BYTES_PER_ROW * n:
            break
        probes = _LARGE_TABLES * (1 + bits + bits * (bits - 1) // 2)
        cost = probes + 1.5 * probes * n / 2 ** bits
        if cost < best_cost:
            best, best_cost = (_LARGE_TABLES, bits, _LARGE_FLIPS), cost
    return best


def _collect(kernel, nq: int, *args):
    """Run a pdq_kernel search into buffers, growing them when the hits did not fit."""
    cap = max(256, 4 * nq)
    while True:
        qi, rows, d = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.uint16)
        n = kernel(*args, qi, rows, d)
        if n <= cap:
            return qi[:n], rows[:n], d[:n]
        cap = n


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="pdq-search")
    return _pools[threads]


class _Segment:
    """An immutable set of hashes with their multi-index tables; rows die in place.

    c64 has one extra all-zero row at the end (row n, never alive): removed rows' table entries
    are pointed at it, so no table still links to a withdrawn hash."""

    def __init__(self, codes: np.ndarray, labels: np.ndarray, groups: np.ndarray, layout="auto"):
        n = len(codes)
        self.n = n
        self.c64 = np.zeros((n + 1, 4), np.uint64)
        self.c64[:n] = np.ascontiguousarray(codes).view(np.uint64).reshape(-1, 4)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.groups = np.ascontiguousarray(groups, dtype=np.int64)
        self.alive = np.ones(n + 1, bool)
        self.alive[n] = False
        self.dead = 0
        self.layout = _choose_layout(n) if layout == "auto" else layout
        self.slots = self.ovf = self.cols = None
        if self.layout is None:
            return
        tables, bits, flips = self.layout
        if tables * bits > PDQ_BITS:
            raise ValueError("tables * bits must fit in 256 bits")
        if tables * n >= 2 ** 31:
            raise ValueError("a segment's tables address rows with int32")
        self.cols = _columns(codes, tables, bits)
        self.slots, self.ovf = pdq_kernel.build_slots(pdq_kernel.table_keys(codes, self.cols), bits)
        self.masks = _flip_masks(bits, flips)     # masks[:1 + bits] flip at most one bit

    def live(self) -> int:
        return self.n - self.dead

    def masks_per_table(self, threshold: int):
        """How many of self.masks each table probes for an exact search within threshold, or
        None when the layout cannot be exact. Pigeonhole over tables probed within f_t flips:
        every hash within threshold is found when sum(f_t + 1) > threshold; the slack beyond
        that lowers some tables' flips, so they probe fewer buckets (11 x 3 = 33 > 31 leaves
        one table at one flip: 24 buckets instead of 276 at 23 bits)."""
        tables, bits, flips = self.layout
        spare = tables * (flips + 1) - (threshold + 1)
        if spare < 0:
            return None
        f = np.full(tables, flips)            # lowered evenly: probes grow faster than linearly
        for t in range(spare):                 # in flips; f = -1 skips a table
            f[t % tables] -= 1
        probes = np.cumsum([1] + [math.comb(bits, k) for k in range(1, flips + 1)])
        return np.where(f < 0, 0, probes[np.maximum(f, 0)]).astype(np.int64)

    def search(self, q64: np.ndarray, q8: np.ndarray, threshold: int):
        """(query rows, segment rows, distances) of live hashes within threshold."""
        nmasks = None if self.layout is None else self.masks_per_table(threshold)
        if nmasks is None:
            return _collect(pdq_kernel.scan, len(q64), q64, self.c64, self.alive, threshold)
        keys = pdq_kernel.table_keys(q8, self.cols)
        return _collect(pdq_kernel.probe, len(q64), q64, keys, self.masks, nmasks, self.layout[1],
                        self.slots, self.ovf, self.c64, self.alive, threshold)

    def kill(self, rows: np.ndarray) -> None:
        """Withdraw rows now: point their table entries at the blank row, zero their codes,
        mark them dead."""
        rows = np.unique(rows[self.alive[rows]])
        if not len(rows):
            return
        if self.layout is not None:
            keys = pdq_kernel.table_keys(self.c64[rows].view(np.uint8).reshape(-1, PDQ_BITS // 8), self.cols)
            pdq_kernel.unlink(keys, rows.astype(np.int32), self.layout[1], self.slots, self.ovf, self.n)
        self.c64[rows] = 0
        self.alive[rows] = False
        self.groups[rows] = -1
        self.dead += len(rows)


class PDQIndex:
    """256-bit hashes with an owner each; exact range search (full recall) at PDQ_THRESHOLD.

    Layout: segments, each an immutable block of hashes (contiguous codes, owner label and group
    as numpy arrays) with its multi-index hash tables as flat slot arrays (pdq_kernel's
    layout), plus a small tail of recent additions that queries scan. When the tail reaches
    TAIL_SIZE it becomes a segment, and segments of similar size merge (a binary counter: at
    most log2(n / TAIL_SIZE) segments, each hash rebuilt log2 times in all). A bulk add becomes
    one segment at once. Removal is in place: the rows' codes are zeroed, their table entries
    blanked and they are marked dead at once; a segment more than a quarter dead is rebuilt
    without them (merges drop dead rows too).

    Owners: either hashable objects (interned: each distinct owner stored once, rows hold its
    number) or an integer numpy array (stored as is). `groups` (an int per hash, e.g. the case
    id) lets `drop_group` remove a case's hashes without looking at owners.

    Not thread-safe by itself: `Index` serialises access with its lock."""

    TAIL_SIZE = 2048
    THREADS = 2                   # threads for a batch of >= 64 queries (the two cores)
    BATCH = 256                   # queries searched together

    def __init__(self, layout="auto"):
        self._layout = layout
        self._segments: list[_Segment] = []
        self._tail: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._tail_n = 0
        self._tail_seg: _Segment | None = None
        self._objects: list | None = None        # interned owners (None: integer owners)
        self._object_ids: dict = {}
        self._int_owners: bool | None = None
        self.threads = self.THREADS

    def __len__(self) -> int:
        return sum(s.live() for s in self._segments) + self._tail_n

    # --- owners ---------------------------------------------------------------------------
    def _labels(self, owners) -> np.ndarray:
        if isinstance(owners, np.ndarray) and owners.dtype.kind in "iu":
            if self._int_owners is False:
                raise ValueError("this index holds object owners")
            self._int_owners = True
            return owners.astype(np.int64)
        if self._int_owners is True:
            raise ValueError("this index holds integer owners")
        self._int_owners = False
        if self._objects is None:
            self._objects = []
        out = np.empty(len(owners), np.int64)
        ids, objs = self._object_ids, self._objects
        for i, o in enumerate(owners):
            j = ids.get(o)
            if j is None:
                j = ids[o] = len(objs)
                objs.append(o)
            out[i] = j
        return out

    def owner(self, label: int):
        return int(label) if self._int_owners else self._objects[label]

    # --- building -------------------------------------------------------------------------
    def add(self, codes: np.ndarray, owners, groups=None) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, PDQ_BITS // 8)
        if len(codes) != len(owners):
            raise ValueError("one owner per hash")
        if not len(codes):
            return
        labels = self._labels(owners)
        groups = np.full(len(codes), -1, np.int64) if groups is None else \
            np.broadcast_to(np.asarray(groups, np.int64), (len(codes),)).copy()
        if not self._tail and len(codes) >= self.TAIL_SIZE:       # a bulk load: one segment now
            self._segments.append(_Segment(codes, labels, groups, layout=self._layout))
            self._merge()
            return
        self._tail.append((codes.copy(), labels, groups))
        self._tail_n += len(codes)
        self._tail_seg = None
        if self._tail_n >= self.TAIL_SIZE:
            self._seal()

    def _tail_arrays(self):
        if len(self._tail) == 1:
            return self._tail[0]
        codes = np.concatenate([c for c, _, _ in self._tail])
        return codes, np.concatenate([l for _, l, _ in self._tail]), np.concatenate([g for _, _, g in self._tail])

    def _seal(self) -> None:
        self._segments.append(_Segment(*self._tail_arrays(), layout=self._layout))
        self._tail, self._tail_n, self._tail_seg = [], 0, None
        self._merge()

    def compact(self) -> None:
        """Merge every segment and the tail into one segment without dead rows: after a bulk
        load case by case (which leaves up to log2(n / TAIL_SIZE) segments), queries then
        probe one set of tables. Takes about as long as building the index at once."""
        if self._tail_n:
            self._segments.append(_Segment(*self._tail_arrays(), layout=None))
            self._tail, self._tail_n, self._tail_seg = [], 0, None
        if len(self._segments) > 1 or any(s.dead for s in self._segments):
            self._segments = [self._rebuild(self._segments)]

    def _merge(self) -> None:
        while len(self._segments) >= 2 and self._segments[-2].live() <= self._segments[-1].live():
            b = self._segments.pop()
            a = self._segments.pop()
            self._segments.append(self._rebuild([a, b]))

    def _rebuild(self, segs: list[_Segment]) -> _Segment:
        parts = [(s.c64[:s.n][s.alive[:s.n]], s.labels[s.alive[:s.n]], s.groups[s.alive[:s.n]]) for s in segs]
        codes = np.concatenate([p[0] for p in parts]).view(np.uint8).reshape(-1, PDQ_BITS // 8)
        return _Segment(codes, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                        layout=self._layout)

    def _remove(self, seg_rows, tail_keep) -> int:
        removed = 0
        for seg, rows in seg_rows:
            before = seg.dead
            seg.kill(rows)
            removed += seg.dead - before
        if tail_keep is not None:
            codes, labels, groups = self._tail_arrays()
            removed += int((~tail_keep).sum())
            at = 0
            for chunk, _, _ in self._tail:       # zero the withdrawn codes where they lay
                chunk[~tail_keep[at:at + len(chunk)]] = 0
                at += len(chunk)
            if self._tail_seg is not None:       # and the scan copy of the tail
                self._tail_seg.c64[:] = 0
            self._tail = [(codes[tail_keep], labels[tail_keep], groups[tail_keep])] if tail_keep.any() else []
            self._tail_n = int(tail_keep.sum())
            self._tail_seg = None
        segs = []
        for seg in self._segments:
            if seg.live() == 0:
                continue
            segs.append(self._rebuild([seg]) if seg.dead * 4 > seg.n else seg)
        self._segments = segs
        return removed

    def drop_group(self, group: int) -> int:
        """Remove every hash of a group (a case) at once; returns how many."""
        seg_rows = [(s, np.flatnonzero(s.groups == group)) for s in self._segments]
        tail_keep = None
        if self._tail_n:
            tail_keep = np.concatenate([g for _, _, g in self._tail]) != group
            if tail_keep.all():
                tail_keep = None
        return self._remove([(s, r) for s, r in seg_rows if len(r)], tail_keep)

    def keep(self, predicate) -> int:
        """Keep only hashes whose owner satisfies predicate (each distinct owner asked once)."""
        def doomed(labels):
            uniq = np.unique(labels)
            bad = np.fromiter((not predicate(self.owner(u)) for u in uniq.tolist()), bool, len(uniq))
            return np.isin(labels, uniq[bad])
        seg_rows = [(s, np.flatnonzero(doomed(s.labels) & s.alive[:s.n])) for s in self._segments]
        tail_keep = None
        if self._tail_n:
            tail_keep = ~doomed(np.concatenate([l for _, l, _ in self._tail]))
            if tail_keep.all():
                tail_keep = None
        return self._remove([(s, r) for s, r in seg_rows if len(r)], tail_keep)

    # --- querying -------------------------------------------------------------------------
    def search(self, queries: np.ndarray, threshold: int = PDQ_THRESHOLD):
        """Every indexed hash within threshold of each query, as numpy arrays (query row, owner
        label, group, distance), ordered by query, then by age of the hash (oldest first)."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, PDQ_BITS // 8)
        q64 = queries.view(np.uint64).reshape(-1, 4)
        segs = list(self._segments)
        if self._tail_n:
            if self._tail_seg is None:
                self._tail_seg = _Segment(*self._tail_arrays(), layout=None)
            segs.append(self._tail_seg)
        if not segs or len(queries) == 0:
            e = np.zeros(0, np.int64)
            return e, e, e, np.zeros(0, np.int32)
        nq = len(queries)
        threads = max(1, min(self.threads, nq // 32))
        step = min(self.BATCH, -(-nq // threads))        # bounds the candidate arrays
        jobs = [(k, at) for k in range(len(segs)) for at in range(0, nq, step)]

        def one(job):
            k, at = job
            seg = segs[k]
            i, rows, d = seg.search(q64[at:at + step], queries[at:at + step], threshold)
            return i + at, seg.labels[rows], seg.groups[rows], d.astype(np.int32), rows + (k << 40)

        if threads > 1 and len(jobs) > 1:
            # numpy lets go of the GIL in its loops: the read-only searches run side by side
            parts = list(_pool(threads).map(one, jobs))
        else:
            parts = [one(j) for j in jobs]
        qi, lab, grp, dist, order = zip(*parts)
        qi, order = np.concatenate(qi), np.concatenate(order)
        s = np.lexsort((order, qi))
        return qi[s], np.concatenate(lab)[s], np.concatenate(grp)[s], np.concatenate(dist)[s]

    def range(self, queries: np.ndarray, threshold: int = PDQ_THRESHOLD):
        """For each query row, [(owner, distance)] of every indexed hash within threshold."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, PDQ_BITS // 8)
        out = [[] for _ in range(len(queries))]
        qi, lab, _, dist = self.search(queries, threshold)
        for i, l, d in zip(qi.tolist(), lab.tolist(), dist.tolist()):
            out[i].append((self.owner(l), d))
        return out


_faiss_lock = threading.Lock()


@contextmanager
def _faiss_threads(n: int):
    """Run faiss on n OpenMP threads (0: its default). A search of a few queries is ~10x
    faster on one thread (480 us against 43 us a query here: waking the OpenMP team costs
    more than the search); many queries gain from all of them."""
    if not n:
        yield
        return
    with _faiss_lock:
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)


class FaceIndex:
    """128-d descriptors, exact L2 range search; rows removed in place."""

    def __init__(self):
        self._index = faiss.IndexIDMap2(faiss.IndexFlatL2(FACE_DIM))
        self._owners: dict[int, tuple] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, vectors: np.ndarray, owners: list) -> None:
        if len(vectors) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, FACE_DIM)
        ids = np.arange(self._next, self._next + len(vectors), dtype=np.int64)
        self._next += len(vectors)
        self._index.add_with_ids(vectors, ids)
        self._owners.update(zip(ids.tolist(), owners))

    def rows(self, predicate) -> list[int]:
        return [i for i, o in self._owners.items() if predicate(o)]

    def remove(self, predicate) -> int:
        gone = self.rows(predicate)
        if gone:
            self._index.remove_ids(np.asarray(gone, dtype=np.int64))
            for i in gone:
                del self._owners[i]
        return len(gone)

    def range(self, queries: np.ndarray, threshold: float = FACE_THRESHOLD):
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, FACE_DIM)
        if len(queries) == 0 or not self._owners:
            return [[] for _ in range(len(queries))]
        with _faiss_threads(1 if len(queries) < 32 else 0):
            lims, dist, ids = self._index.range_search(queries, float(threshold) ** 2)   # squared L2
        return [[(int(j), float(np.sqrt(max(d, 0.0)))) for j, d in
                 zip(ids[lims[i]:lims[i + 1]], dist[lims[i]:lims[i + 1]])] for i in range(len(queries))]

    def owner(self, row: int):
        return self._owners[row]

    def vector(self, row: int) -> np.ndarray:
        return self._index.reconstruct(int(row))


class FaceCohort:
    """Faces of other people, as the crawl sees them: how unusual is a distance for this face?

    A registered face that resembles many strangers has many crawled faces within the
    threshold; the raw distance cannot tell those apart from her. So each face candidate is
    also ranked against the crawled faces seen so far: `closer_than(v, d)` is the share of
    cohort faces farther than d from the registered descriptor v ("closer than 99.9 % of
    other faces seen"). The cohort is a uniform sample (reservoir, at most MAX faces) of the
    distinct crawled faces this process has seen, so it follows the crawl as it grows; it
    lives in the matcher's memory only, like the index. Each registered face's sorted
    distances to the cohort are kept and recomputed when the cohort has changed by 2 %.
    A few crawled faces may be her own (true matches): they only make the rank modest.
    """
    MAX = 20_000
    MIN = 100                  # below this, no rank: too few faces to say what is unusual

    def __init__(self, max_size: int = MAX, seed: int = 0):
        self.max_size = max_size
        self._vectors = np.zeros((max_size, FACE_DIM), np.float32)
        self.size = 0
        self.seen = 0          # distinct faces offered, for the reservoir
        self.version = 0       # changes counted since start
        self._keys: set[bytes] = set()
        self._rng = np.random.default_rng(seed)
        self._sorted: dict[bytes, tuple[int, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.size

    def add(self, vectors) -> int:
        """Offer crawled face descriptors; each distinct one counts once. Returns how many were new."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, FACE_DIM)
        new = 0
        with self._lock:
            for v in vectors:
                key = v.tobytes()
                if key in self._keys:
                    continue
                self._keys.add(key)
                self.seen += 1
                new += 1
                if self.size < self.max_size:
                    self._vectors[self.size] = v
                    self.size += 1
                else:
                    j = int(self._rng.integers(0, self.seen))
                    if j >= self.max_size:
                        continue
                    self._vectors[j] = v
                self.version += 1
        return new

    def _distances(self, v: np.ndarray) -> np.ndarray:
        key = np.asarray(v, np.float32).tobytes()
        with self._lock:
            cached = self._sorted.get(key)
            if cached is not None and self.version - cached[0] <= self.size // 50:
                return cached[1]
            cohort, version = self._vectors[:self.size].copy(), self.version
        d = np.sort(np.linalg.norm(cohort - np.asarray(v, np.float32), axis=1))
        with self._lock:
            self._sorted[key] = (version, d)
        return d

    def closer_than(self, v, distance: float) -> float | None:
        """Share of cohort faces farther from v than `distance` (None while the cohort is small).

        The crawled face itself may be in the cohort (seen before): faces at the very same
        distance do not count against it."""
        if self.size < self.MIN:
            return None
        d = self._distances(v)
        nearer = int(np.searchsorted(d, float(distance) - 1e-4, side="left"))
        return 1.0 - nearer / len(d)

    def vectors(self) -> np.ndarray:
        with self._lock:
            return self._vectors[:self.size].copy()

    def forget(self, vectors) -> None:
        """Drop the cached ranks of registered faces that left the index (a withdrawn case)."""
        with self._lock:
            for v in np.asarray(vectors, np.float32).reshape(-1, FACE_DIM):
                self._sorted.pop(v.tobytes(), None)


@dataclass
class _Video:
    case: int
    item: str
    codes: np.ndarray            # distinct frame hashes with quality >= PDQ_MIN_QUALITY


@dataclass
class Index:
    """All indexes of all cases, updated case by case. Thread-safe for one writer, many readers."""
    pdq: PDQIndex = field(default_factory=PDQIndex)
    frames: PDQIndex = field(default_factory=PDQIndex)
    faces: FaceIndex = field(default_factory=FaceIndex)
    cohort: FaceCohort = field(default_factory=FaceCohort)
    exact: dict = field(default_factory=lambda: {"sha256": {}, "md5": {}})
    videos: dict = field(default_factory=dict)      # video id -> _Video
    cases: dict = field(default_factory=dict)       # case id -> counts by type
    _exact_of: dict = field(default_factory=dict, repr=False)     # case id -> {(type, hash)}
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _next_video: int = 0

    # --- building -----------------------------------------------------------------------
    def add_case(self, case_id: int, signals: list[dict]) -> dict:
        """Index a case's signals (§6.3 dicts); replaces what the case had before."""
        with self._lock:
            if case_id in self.cases:
                self.remove_case(case_id)
            counts = {"pdq": 0, "sha256": 0, "md5": 0, "vpdq": 0, "face": 0, "skipped": 0}
            pdq_hex, pdq_own, face_vec, face_own = [], [], [], []
            for sig in signals:
                t = sig.get("type")
                item = str(sig.get("item", ""))
                if t == "pdq":
                    if int(sig.get("quality", 0)) < PDQ_MIN_QUALITY:
                        counts["skipped"] += 1
                        continue
                    pdq_hex.append(sig["hash"].lower())
                    pdq_own.append((item, sig.get("variant", "full")))
                elif t in ("sha256", "md5"):
                    self.exact[t].setdefault(sig["hash"].lower(), set()).add((case_id, item))
                    self._exact_of.setdefault(case_id, set()).add((t, sig["hash"].lower()))
                elif t == "vpdq":
                    hexes = sorted({f[2].lower() for f in sig.get("frames", []) if int(f[1]) >= PDQ_MIN_QUALITY})
                    if not hexes:
                        counts["skipped"] += 1
                        continue
                    vid = self._next_video
                    self._next_video += 1
                    codes = codes_of(hexes)
                    self.videos[vid] = _Video(case_id, item, codes)
                    self.frames.add(codes, np.full(len(codes), vid, np.int64), groups=case_id)
                elif t == "face":
                    face_vec.append(np.asarray(sig["descriptor"], dtype=np.float32))
                    face_own.append((case_id, item))
                else:
                    counts["skipped"] += 1
                    continue
                counts[t] += 1
            self.pdq.add(codes_of(pdq_hex), pdq_own, groups=case_id)
            if face_vec:
                self.faces.add(np.stack(face_vec), face_own)
            self.cases[case_id] = counts
            return counts

    def remove_case(self, case_id: int) -> bool:
        """Forget a case at once: no query returns it after this returns."""
        with self._lock:
            known = self.cases.pop(case_id, None) is not None
            self.pdq.drop_group(case_id)
            self.frames.drop_group(case_id)
            gone = self.faces.rows(lambda o: o[0] == case_id)
            if gone:
                self.cohort.forget(np.stack([self.faces.vector(r) for r in gone]))
            self.faces.remove(lambda o: o[0] == case_id)
            for t, h in self._exact_of.pop(case_id, ()):
                owners = {o for o in self.exact[t].get(h, ()) if o[0] != case_id}
                if owners:
                    self.exact[t][h] = owners
                else:
                    self.exact[t].pop(h, None)
            for vid in [v for v, video in self.videos.items() if video.case == case_id]:
                del self.videos[vid]
            return known

    def compact(self) -> None:
        """Rebuild the PDQ and frame indexes as one segment each (e.g. after a full refresh)."""
        with self._lock:
            self.pdq.compact()
            self.frames.compact()

    def case_ids(self) -> set[int]:
        with self._lock:
            return set(self.cases)

    def stats(self) -> dict:
        with self._lock:
            return {"cases": len(self.cases), "pdq": len(self.pdq), "frames": len(self.frames),
                    "videos": len(self.videos), "faces": len(self.faces),
                    "sha256": len(self.exact["sha256"]), "md5": len(self.exact["md5"])}

    # --- querying -----------------------------------------------------------------------
    def query(self, media: dict, observe: bool = True) -> list[dict]:
        """Candidates for one crawled media's signals: each (case, kind) once, best distance.

        media = {"sha256", "md5", "pdq": [{variant, hash, quality}], "vpdq": [[s, q, hex]],
        "faces": [{"descriptor"}]}. A candidate: {"case", "kind", "distance", "item", ...}
        with the evidence of its kind (variants for PDQ, frame shares for vPDQ, the number of
        the case's registered faces that agree for faces, and their cohort rank). Its faces
        join the cohort of crawled faces unless observe is False.
        """
        best: dict[tuple, dict] = {}

        def offer(cand: dict):
            key = (cand["case"], cand["kind"])
            if key not in best or cand["distance"] < best[key]["distance"]:
                best[key] = cand

        with self._lock:
            for t in ("sha256", "md5"):
                h = media.get(t)
                if h:
                    for case, item in self.exact[t].get(h.lower(), ()):
                        offer({"case": case, "kind": t, "distance": 0, "item": item})

            pdqs = [p for p in media.get("pdq") or [] if int(p.get("quality", 0)) >= PDQ_MIN_QUALITY]
            if pdqs and len(self.pdq):
                qi, labels, groups, dist = self.pdq.search(codes_of([p["hash"].lower() for p in pdqs]))
                for i, label, case, d in zip(qi.tolist(), labels.tolist(), groups.tolist(), dist.tolist()):
                    item, variant = self.pdq.owner(label)
                    offer({"case": case, "kind": "pdq", "distance": d, "item": item,
                           "variant": variant, "query_variant": pdqs[i].get("variant", "full")})

            if pdqs and len(self.frames):        # a still of a registered video
                for cand in self._image_in_video(pdqs):
                    offer(cand)

            frames = media.get("vpdq") or []
            if frames and len(self.frames):
                for cand in self._vpdq(frames):
                    offer(cand)
            if frames and len(self.pdq):          # a registered photo shown in a video
                for cand in self._photo_in_video(frames):
                    offer(cand)

            faces = [f for f in media.get("faces") or [] if f.get("descriptor") is not None]
            if faces:
                for cand in self._faces(faces, observe):
                    offer(cand)
        return sorted(best.values(), key=lambda c: (c["case"], c["kind"]))

    def _image_in_video(self, pdqs) -> list[dict]:
        qi, vids, _, dist = self.frames.search(codes_of([p["hash"].lower() for p in pdqs]))
        return [{"case": self.videos[vid].case, "kind": "frame", "distance": d, "item": self.videos[vid].item,
                 "query_variant": pdqs[i].get("variant", "full")}
                for i, vid, d in zip(qi.tolist(), vids.tolist(), dist.tolist())]

    def _photo_in_video(self, frames) -> list[dict]:
        first: dict[str, float] = {}                   # distinct frame hash -> first second seen
        for s, q, h in frames:
            if int(q) >= PDQ_MIN_QUALITY:
                first.setdefault(h.lower(), float(s))
        if not first:
            return []
        hexes = list(first)
        qi, labels, groups, dist = self.pdq.search(codes_of(hexes))
        out = []
        for i, label, case, d in zip(qi.tolist(), labels.tolist(), groups.tolist(), dist.tolist()):
            item, variant = self.pdq.owner(label)
            out.append({"case": case, "kind": "frame", "distance": d, "item": item, "variant": variant,
                        "second": first[hexes[i]]})
        return out

    def _vpdq(self, frames) -> list[dict]:
        hexes = sorted({f[2].lower() for f in frames if int(f[1]) >= PDQ_MIN_QUALITY})
        if not hexes:
            return []
        q = codes_of(hexes)
        qis, vids, _, dists = self.frames.search(q)
        per_video: dict[int, dict[int, int]] = {}        # video -> query row -> best distance
        for qi, vid, d in zip(qis.tolist(), vids.tolist(), dists.tolist()):
            seen = per_video.setdefault(vid, {})
            seen[qi] = min(d, seen.get(qi, 999))
        out = []
        for vid, seen in per_video.items():
            query_share = len(seen) / len(q)
            if query_share < VPDQ_SHARE:
                continue
            video = self.videos[vid]
            d = hamming_brute(video.codes, q).min(axis=1)
            target_share = float((d <= PDQ_THRESHOLD).mean())
            if target_share < VPDQ_SHARE:
                continue
            within = sorted(seen.values())
            out.append({"case": video.case, "kind": "vpdq", "item": video.item,
                        "distance": float(np.median(within)),
                        "query_share": round(query_share, 4), "target_share": round(target_share, 4)})
        return out

    def _faces(self, faces, observe: bool = True) -> list[dict]:
        """Face candidates: per case its best registered face (the case's faces are one
        template; bench/bench_face_roc.py measured the best face against their centroid), how
        many of its faces agree, and where the distance stands among other people's crawled
        faces ("face_closer", FaceCohort). The query's faces then join the cohort."""
        q = np.stack([np.asarray(f["descriptor"], dtype=np.float32) for f in faces])
        hits = self.faces.range(q) if len(self.faces) else [[] for _ in range(len(q))]
        per_case: dict[int, dict] = {}
        for qi, found in enumerate(hits):
            for row, d in found:
                case, item = self.faces.owner(row)
                c = per_case.setdefault(case, {"distance": 99.0, "item": item, "rows": set(), "query_faces": set()})
                c["rows"].add(row)
                c["query_faces"].add(qi)
                if d < c["distance"]:
                    c["distance"], c["item"], c["row"] = d, item, row
        out = []
        for case, c in per_case.items():
            cand = {"case": case, "kind": "face", "distance": round(c["distance"], 4), "item": c["item"],
                    "faces_agreeing": len(c["rows"]), "query_faces": len(c["query_faces"])}
            closer = self.cohort.closer_than(self.faces.vector(c["row"]), c["distance"])
            if closer is not None:
                cand["face_closer"], cand["cohort"] = round(closer, 6), len(self.cohort)
            out.append(cand)
        if observe:
            self.cohort.add(q)
        return out
