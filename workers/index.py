"""The in-memory match indexes: PDQ, exact file hashes, vPDQ and faces.

Everything here lives only in the memory of the matcher process (workers/match.py); nothing
is logged, written or sent anywhere. Signals come in as the §6.3 payload dicts of a case and
go out of memory when the case is removed.

- **PDQ**: a FAISS multi-index hashing index (`IndexBinaryMultiHash`, 16 tables of 16 bits,
  one bit flip per table at query time). Two 256-bit hashes within 31 bits differ in at most
  one bit of at least one of the 16 blocks (pigeonhole: 16 x 2 = 32 > 31), so the range
  search finds every hash within 31 bits: full recall, verified against a numpy brute force
  in tests/test_index.py and bench/bench_pdq_index.py. The hashes sit in shards of 131,072
  (one FAISS index each) so that a withdrawal rebuilds one shard, not everything (FAISS's
  multi-hash index cannot delete). Registered hashes with quality < 50
  are not indexed, query hashes with quality < 50 are not asked (Meta's PDQ rule).
- **Exact hashes**: a dict per type (sha256, md5) from hash to the (case, item) holding it.
- **vPDQ**: every distinct frame hash (quality >= 50) of every registered video goes into a
  second PDQ index; a query video's frames find candidate videos there, and each candidate
  is then compared as a bag of frames: a match when >= 80 % of the query's frames are within
  31 bits of some frame of the registered video and >= 80 % of the registered video's frames
  within 31 bits of some query frame; identical frame hashes count once, frames below
  quality 50 are left out (Meta's vPDQ rule, the same as `workers.videos.vpdq_match`).
- **Faces**: 128-d dlib descriptors in an exact L2 index (`IndexIDMap2(IndexFlatL2)`), range
  search at FACE_THRESHOLD (see its comment for the calibration).

Removal is immediate: when `remove_case` returns, no query finds the case and its codes are
out of the index's memory (the PDQ shards that held them are rebuilt from the remaining
entries, the face index removes its rows in place, the dicts drop them).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import faiss
import numpy as np

PDQ_BITS = 256
PDQ_THRESHOLD = 31            # bits: a match at distance <= 31 (Meta)
PDQ_MIN_QUALITY = 50          # hashes of lower quality say little and are not matched
VPDQ_SHARE = 0.8              # both sides: this share of frames within PDQ_THRESHOLD

# Face threshold, calibrated by `bench/bench_face_index.py --calibrate` on the face-api sample
# photos (6 photos, 20 faces; each photo also as half size, JPEG quality 40, mirrored and
# rotated 5 degrees; dlib "small" model through workers.faces.describe_faces):
#   same face under those transforms (78 pairs): max 0.316, mean 0.116, 95th pct 0.256;
#   faces from different photos (190 pairs):     min 0.411, 5th pct 0.602, mean 0.753
#   (the one pair at 0.411 may be the same woman in two photos; the next is 0.531).
# The registered side comes from the victim's browser, whose descriptors differ from dlib's
# by 0.137 on average (DESIGN §6.2), so: 0.316 + 0.137 = 0.45. It keeps 189 of 190
# different-photo pairs out. Faces only ever raise a candidate for review: a face alone stays
# far below the flag line in workers/confidence.py.
FACE_THRESHOLD = 0.45
FACE_DIM = 128

_MH_TABLES, _MH_BITS, _MH_FLIPS = 16, 16, 1


def hex_to_code(hex64: str) -> np.ndarray:
    """A PDQ hex (bit 0 the most significant bit) as FAISS's 32 uint8 bytes."""
    return np.frombuffer(bytes.fromhex(hex64), dtype=np.uint8)


def codes_of(hexes) -> np.ndarray:
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


class _Shard:
    __slots__ = ("index", "chunks", "owners")

    def __init__(self, index):
        self.index = index
        self.chunks: list[np.ndarray] = []
        self.owners: list = []


class PDQIndex:
    """Binary hashes with an owner each; range search within PDQ_THRESHOLD, full recall.

    The hashes live in shards of at most SHARD_SIZE, each its own FAISS index. FAISS's
    multi-hash index cannot delete, so removing a case rebuilds only the shards that held
    its hashes (a tenth of a 1M index at most per shard, instead of all of it)."""

    SHARD_SIZE = 1 << 17

    def __init__(self, kind: str = "multihash", shard_size: int | None = None):
        self.kind = kind
        self.shard_size = shard_size or self.SHARD_SIZE
        self._shards: list[_Shard] = []

    def _empty(self):
        if self.kind == "multihash":
            idx = faiss.IndexBinaryMultiHash(PDQ_BITS, _MH_TABLES, _MH_BITS)
            idx.nflip = _MH_FLIPS
            return idx
        if self.kind == "flat":
            return faiss.IndexBinaryFlat(PDQ_BITS)
        raise ValueError(self.kind)

    def __len__(self) -> int:
        return sum(len(sh.owners) for sh in self._shards)

    def add(self, codes: np.ndarray, owners: list) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, PDQ_BITS // 8)
        if len(codes) != len(owners):
            raise ValueError("one owner per hash")
        start = 0
        while start < len(codes):
            if not self._shards or len(self._shards[-1].owners) >= self.shard_size:
                self._shards.append(_Shard(self._empty()))
            shard = self._shards[-1]
            take = min(len(codes) - start, self.shard_size - len(shard.owners))
            part = codes[start:start + take]
            shard.index.add(part)
            shard.chunks.append(part)
            shard.owners.extend(owners[start:start + take])
            start += take

    def keep(self, predicate) -> int:
        """Keep only rows whose owner satisfies predicate (rebuilding the shards that lose rows)."""
        removed = 0
        for shard in self._shards:
            if not shard.owners:
                continue
            mask = np.fromiter((bool(predicate(o)) for o in shard.owners), dtype=bool, count=len(shard.owners))
            gone = int((~mask).sum())
            if not gone:
                continue
            removed += gone
            codes = np.concatenate(shard.chunks)[mask]
            shard.owners = [o for o, k in zip(shard.owners, mask) if k]
            shard.chunks = [codes] if len(codes) else []
            shard.index = self._empty()
            if len(codes):
                shard.index.add(codes)
        self._shards = [sh for sh in self._shards if sh.owners] or []
        return removed

    def range(self, queries: np.ndarray, threshold: int = PDQ_THRESHOLD):
        """For each query row, [(owner, distance)] of every indexed hash within threshold."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, PDQ_BITS // 8)
        out = [[] for _ in range(len(queries))]
        if len(queries) == 0:
            return out
        for shard in self._shards:
            if not shard.owners:
                continue
            # FAISS binary range search returns distances strictly below the radius.
            lims, dist, ids = shard.index.range_search(queries, threshold + 1)
            owners = shard.owners
            for i in range(len(queries)):
                for j in range(lims[i], lims[i + 1]):
                    out[i].append((owners[ids[j]], int(dist[j])))
        return out


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

    def remove(self, predicate) -> int:
        gone = [i for i, o in self._owners.items() if predicate(o)]
        if gone:
            self._index.remove_ids(np.asarray(gone, dtype=np.int64))
            for i in gone:
                del self._owners[i]
        return len(gone)

    def range(self, queries: np.ndarray, threshold: float = FACE_THRESHOLD):
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, FACE_DIM)
        if len(queries) == 0 or not self._owners:
            return [[] for _ in range(len(queries))]
        lims, dist, ids = self._index.range_search(queries, float(threshold) ** 2)   # squared L2
        return [[(int(j), float(np.sqrt(max(d, 0.0)))) for j, d in
                 zip(ids[lims[i]:lims[i + 1]], dist[lims[i]:lims[i + 1]])] for i in range(len(queries))]

    def owner(self, row: int):
        return self._owners[row]


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
                    pdq_own.append((case_id, item, sig.get("variant", "full")))
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
                    self.frames.add(codes, [(case_id, vid)] * len(codes))
                elif t == "face":
                    face_vec.append(np.asarray(sig["descriptor"], dtype=np.float32))
                    face_own.append((case_id, item))
                else:
                    counts["skipped"] += 1
                    continue
                counts[t] += 1
            self.pdq.add(codes_of(pdq_hex), pdq_own)
            if face_vec:
                self.faces.add(np.stack(face_vec), face_own)
            self.cases[case_id] = counts
            return counts

    def remove_case(self, case_id: int) -> bool:
        """Forget a case at once: no query returns it after this returns."""
        with self._lock:
            known = self.cases.pop(case_id, None) is not None
            self.pdq.keep(lambda o: o[0] != case_id)
            self.frames.keep(lambda o: o[0] != case_id)
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

    def case_ids(self) -> set[int]:
        with self._lock:
            return set(self.cases)

    def stats(self) -> dict:
        with self._lock:
            return {"cases": len(self.cases), "pdq": len(self.pdq), "frames": len(self.frames),
                    "videos": len(self.videos), "faces": len(self.faces),
                    "sha256": len(self.exact["sha256"]), "md5": len(self.exact["md5"])}

    # --- querying -----------------------------------------------------------------------
    def query(self, media: dict) -> list[dict]:
        """Candidates for one crawled media's signals: each (case, kind) once, best distance.

        media = {"sha256", "md5", "pdq": [{variant, hash, quality}], "vpdq": [[s, q, hex]],
        "faces": [{"descriptor"}]}. A candidate: {"case", "kind", "distance", "item", ...}
        with the evidence of its kind (variants for PDQ, frame shares for vPDQ, the number of
        the case's registered faces that agree for faces).
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
                hits = self.pdq.range(codes_of([p["hash"].lower() for p in pdqs]))
                for p, found in zip(pdqs, hits):
                    for (case, item, variant), d in found:
                        offer({"case": case, "kind": "pdq", "distance": int(d), "item": item,
                               "variant": variant, "query_variant": p.get("variant", "full")})

            frames = media.get("vpdq") or []
            if frames and len(self.frames):
                for cand in self._vpdq(frames):
                    offer(cand)

            faces = [f for f in media.get("faces") or [] if f.get("descriptor") is not None]
            if faces and len(self.faces):
                for cand in self._faces(faces):
                    offer(cand)
        return sorted(best.values(), key=lambda c: (c["case"], c["kind"]))

    def _vpdq(self, frames) -> list[dict]:
        hexes = sorted({f[2].lower() for f in frames if int(f[1]) >= PDQ_MIN_QUALITY})
        if not hexes:
            return []
        q = codes_of(hexes)
        hits = self.frames.range(q)
        per_video: dict[int, dict[int, int]] = {}        # video -> query row -> best distance
        for qi, found in enumerate(hits):
            for (_, vid), d in found:
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

    def _faces(self, faces) -> list[dict]:
        q = np.stack([np.asarray(f["descriptor"], dtype=np.float32) for f in faces])
        hits = self.faces.range(q)
        per_case: dict[int, dict] = {}
        for qi, found in enumerate(hits):
            for row, d in found:
                case, item = self.faces.owner(row)
                c = per_case.setdefault(case, {"distance": 99.0, "item": item, "rows": set(), "query_faces": set()})
                c["rows"].add(row)
                c["query_faces"].add(qi)
                if d < c["distance"]:
                    c["distance"], c["item"] = d, item
        return [{"case": case, "kind": "face", "distance": round(c["distance"], 4), "item": c["item"],
                 "faces_agreeing": len(c["rows"]), "query_faces": len(c["query_faces"])}
                for case, c in per_case.items()]
