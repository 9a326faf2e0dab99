"""The in-memory indexes against brute force: PDQ, exact hashes, vPDQ, faces; and confidence."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from workers.matching import confidence
from workers.matching import index as index_module
from workers.matching.index import FACE_THRESHOLD, PDQ_THRESHOLD, Index, PDQIndex, codes_of, hamming_brute

RNG = np.random.default_rng(20261122)


def flip_bits(code: np.ndarray, n: int, rng=RNG) -> np.ndarray:
    out = code.copy()
    for b in rng.choice(256, n, replace=False):
        out[b // 8] ^= 1 << (7 - b % 8)
    return out


def to_hex(code: np.ndarray) -> str:
    return code.tobytes().hex()


def test_pdq_multihash_has_full_recall_and_precision_against_brute_force():
    base = RNG.integers(0, 256, (20_000, 32), dtype=np.uint8)
    # Clusters of near neighbours at every distance around the threshold, planted in the noise.
    centres = base[:50]
    planted = np.stack([flip_bits(c, d) for c in centres for d in (1, 8, 16, 24, 29, 30, 31, 32, 33, 40)])
    codes = np.concatenate([base, planted])
    idx = PDQIndex()
    idx.add(codes, list(range(len(codes))))
    queries = np.concatenate([centres, np.stack([flip_bits(c, 5) for c in centres]), base[1000:1050]])
    got = idx.range(queries)
    truth = hamming_brute(queries, codes)
    total = 0
    for i in range(len(queries)):
        expected = set(np.nonzero(truth[i] <= PDQ_THRESHOLD)[0].tolist())
        assert {row for row, _ in got[i]} == expected, i
        for row, d in got[i]:
            assert d == truth[i, row]
        total += len(expected)
    assert total > 300          # the test saw many true neighbours, at 31 bits included
    assert max(d for hits in got for _, d in hits) == 31


def test_pdq_index_keep_removes_rows_and_codes():
    codes = RNG.integers(0, 256, (100, 32), dtype=np.uint8)
    idx = PDQIndex()
    idx.add(codes, [(i % 3, i) for i in range(100)])
    assert idx.keep(lambda o: o[0] != 1) == 33
    assert len(idx) == 67
    hits = idx.range(codes)
    assert all(o[0] != 1 for h in hits for o, _ in h)
    assert [h[0][0][1] for h in hits if h] == [i for i in range(100) if i % 3 != 1]
    assert all(h == [] for i, h in enumerate(hits) if i % 3 == 1)
    idx.add(codes[:5], [(4, i) for i in range(5)])
    assert len(idx) == 72 and idx.range(codes[:1])[0][-1] == ((4, 0), 0)


@pytest.mark.parametrize("layout", ["auto", (16, 16, 1), (11, 13, 2), None])
def test_pdq_segments_stay_exact_through_adds_merges_and_removals(layout, monkeypatch):
    # Adds of every size (tail, sealed segments, binary-counter merges), near-duplicates around
    # the threshold, withdrawals by group and by owner predicate (in-place kills, compaction):
    # after all of it, batched and single queries equal brute force over the live hashes.
    # Every hashed segment here picks its tables' bits from the data (as large ones do).
    monkeypatch.setattr(index_module, "_DECORRELATE_FROM", 0)
    rng = np.random.default_rng(7)
    idx = PDQIndex(layout=layout)
    codes, owners, live = [], [], []
    for step in range(24):
        k = int(rng.choice([1, 7, 150, 1500]))
        new = rng.integers(0, 256, (k, 32), dtype=np.uint8)
        if codes and k > 1:
            old = np.concatenate(codes)
            new[: k // 2] = np.stack([flip_bits(old[rng.integers(len(old))], int(rng.integers(0, 40)), rng)
                                      for _ in range(k // 2)])
        idx.add(new, [(step, i) for i in range(k)], groups=step)
        codes.append(new)
        owners += [(step, i) for i in range(k)]
        live += [True] * k
        if step % 6 == 5:
            gone = int(rng.integers(0, step))
            dropped = idx.drop_group(gone)
            assert dropped == sum(1 for o, a in zip(owners, live) if a and o[0] == gone)
            live = [a and o[0] != gone for o, a in zip(owners, live)]
        if step == 16:
            idx.keep(lambda o: o[1] % 5 != 0)
            live = [a and o[1] % 5 != 0 for o, a in zip(owners, live)]
    codes, live = np.concatenate(codes), np.array(live)
    assert len(idx) == live.sum()
    picks = rng.integers(0, len(codes), 150)
    queries = np.concatenate([codes[picks[:50]], np.stack([flip_bits(codes[i], int(rng.integers(0, 36)), rng)
                                                            for i in picks[50:]])])
    truth = hamming_brute(queries, codes)
    got = idx.range(queries)
    singles = [idx.range(queries[i:i + 1])[0] for i in range(0, len(queries), 5)]
    pairs = 0
    for i in range(len(queries)):
        expected = sorted((owners[j], int(truth[i, j])) for j in np.nonzero((truth[i] <= PDQ_THRESHOLD) & live)[0])
        assert sorted(got[i]) == expected, i
        if i % 5 == 0:
            assert sorted(singles[i // 5]) == expected, i
        pairs += len(expected)
    assert pairs > 150
    row_of = {o: j for j, o in enumerate(owners)}
    assert all(live[row_of[o]] for h in idx.range(codes[~live][:40]) for o, _ in h)    # withdrawn: gone
    idx.compact()                               # one segment, same answers
    assert len(idx._segments) == 1 and idx._tail_n == 0 and len(idx) == live.sum()
    assert [sorted(h) for h in idx.range(queries)] == [sorted(h) for h in got]


def test_pdq_withdrawn_hashes_leave_codes_and_tables():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (12_000, 32), dtype=np.uint8)
    idx = PDQIndex(layout=(11, 13, 2))
    idx.add(codes, np.arange(len(codes)), groups=np.arange(len(codes)) // 20)
    seg = idx._segments[0]
    rows = np.flatnonzero(seg.groups == 7)
    assert idx.drop_group(7) == 20 and len(idx) == len(codes) - 20
    assert not seg.c64[rows].any()                                         # zeroed
    assert not np.isin(seg.slots, rows).any() and not np.isin(seg.ovf, rows).any()   # unlinked
    qi, labels, groups, _ = idx.search(codes[140:160])
    assert not len(labels)
    qi, labels, groups, dist = idx.search(codes[160:180])
    assert labels.tolist() == list(range(160, 180)) and set(groups.tolist()) == {8} and not dist.any()
    # more than a quarter withdrawn: the segment is rebuilt without them
    for g in range(0, len(codes) // 20, 3):
        idx.drop_group(g)
    assert all(s.dead * 4 <= s.n for s in idx._segments)
    assert len(idx) == sum(1 for i in range(len(codes)) if (i // 20) % 3 and i // 20 != 7)


def test_pdq_crowded_buckets_and_lower_thresholds_stay_exact():
    # 3,000 copies of one hash and 300 near it fill one bucket per table far past its two
    # slots; searches at lower thresholds probe fewer buckets (or skip tables) and stay exact.
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, (20_000, 32), dtype=np.uint8)
    same = np.repeat(base[:1], 3000, axis=0)
    near = np.stack([flip_bits(base[0], int(d), rng) for d in rng.integers(1, 40, 300)])
    codes = np.concatenate([base, same, near])
    idx = PDQIndex(layout=(11, 14, 2))
    idx.add(codes, np.arange(len(codes)))
    seg = idx._segments[0]
    assert seg.ovf.size > 3000 * 11
    queries = np.concatenate([base[:3], near[:20], base[100:120]])
    truth = hamming_brute(queries, codes)
    for threshold in (0, 5, 10, 20, 31):
        qi, labels, _, dist = idx.search(queries, threshold)
        for i in range(len(queries)):
            expected = np.flatnonzero(truth[i] <= threshold)
            got = labels[qi == i]
            assert sorted(got.tolist()) == expected.tolist(), (threshold, i)
            assert (dist[qi == i] == truth[i, got]).all()
    assert seg.masks_per_table(31).tolist() == [15] + [106] * 10       # 1 + 14; 1 + 14 + 91
    assert seg.masks_per_table(5).tolist() == [0] * 5 + [1] * 6
    assert seg.masks_per_table(33) is None


def _pdq(sig_hex, quality=90, variant="full", item="p1"):
    return {"type": "pdq", "hash": sig_hex, "quality": quality, "item": item, "variant": variant}


def test_query_each_case_and_kind_once_with_best_distance_and_quality_filter():
    a = RNG.integers(0, 256, 32, dtype=np.uint8)
    b = RNG.integers(0, 256, 32, dtype=np.uint8)
    idx = Index()
    idx.add_case(1, [_pdq(to_hex(a)), _pdq(to_hex(flip_bits(a, 3)), variant="trimmed"),
                     {"type": "sha256", "hash": "ab" * 32, "item": "p1"},
                     {"type": "md5", "hash": "cd" * 16, "item": "p1"}])
    idx.add_case(2, [_pdq(to_hex(b), quality=40)])          # too flat: never indexed
    assert idx.stats()["pdq"] == 2
    media = {"sha256": "AB" * 32, "md5": "00" * 16,
             "pdq": [{"variant": "orig", "hash": to_hex(flip_bits(a, 10)), "quality": 80},
                     {"variant": "trimmed", "hash": to_hex(flip_bits(a, 4)), "quality": 80},
                     {"variant": "rot90", "hash": to_hex(b), "quality": 80},
                     {"variant": "flipx", "hash": to_hex(a), "quality": 30}]}   # low quality: ignored
    got = idx.query(media)
    assert [(c["case"], c["kind"]) for c in got] == [(1, "pdq"), (1, "sha256")]
    pdq = got[0]
    assert pdq["distance"] in (1, 4) and pdq["distance"] == min(
        hamming_brute(codes_of([to_hex(flip_bits(a, 4))]), codes_of([to_hex(a), to_hex(flip_bits(a, 3))])).min(), 4)
    assert pdq["item"] == "p1" and pdq["query_variant"] == "trimmed"


def test_withdrawn_case_is_gone_immediately_and_others_stay():
    a, b = (RNG.integers(0, 256, 32, dtype=np.uint8) for _ in range(2))
    desc = RNG.normal(0, 0.1, 128)
    idx = Index()
    idx.add_case(7, [_pdq(to_hex(a)), {"type": "sha256", "hash": "11" * 32, "item": "p1"},
                     {"type": "face", "descriptor": desc.tolist(), "item": "s1"},
                     {"type": "vpdq", "frames": [[i, 90, to_hex(RNG.integers(0, 256, 32, dtype=np.uint8))]
                                                 for i in range(5)], "item": "v1"}])
    idx.add_case(8, [_pdq(to_hex(b))])
    media = {"sha256": "11" * 32, "pdq": [{"variant": "orig", "hash": to_hex(a), "quality": 90},
                                          {"variant": "rot90", "hash": to_hex(b), "quality": 90}],
             "faces": [{"descriptor": desc.tolist()}]}
    assert {c["case"] for c in idx.query(media)} == {7, 8}
    assert idx.remove_case(7)
    assert {c["case"] for c in idx.query(media)} == {8}
    stats = idx.stats()
    assert stats["cases"] == 1 and stats["faces"] == 0 and stats["frames"] == 0 and stats["sha256"] == 0
    assert not idx.remove_case(7)


def _frames(codes, quality=90):
    return [[float(i), quality, to_hex(c)] for i, c in enumerate(codes)]


def test_vpdq_bag_of_frames_needs_both_sides_at_80_percent():
    video = [RNG.integers(0, 256, 32, dtype=np.uint8) for _ in range(20)]
    idx = Index()
    idx.add_case(3, [{"type": "vpdq", "frames": _frames(video), "item": "v1"}])
    # A re-encode: every frame a few bits off.
    reencoded = [flip_bits(c, 12) for c in video]
    got = idx.query({"vpdq": _frames(reencoded)})
    assert [(c["case"], c["kind"]) for c in got] == [(3, "vpdq")]
    assert got[0]["query_share"] == 1.0 and got[0]["target_share"] == 1.0
    # 85 % of the frames (a trimmed copy): still both sides >= 80 %.
    assert idx.query({"vpdq": _frames(reencoded[:17])})
    # Half of the video: the registered side's share is 50 % -> no match.
    assert idx.query({"vpdq": _frames(reencoded[:10])}) == []
    # The video inside a compilation twice as long: the query side's share is 50 % -> no match.
    other = [RNG.integers(0, 256, 32, dtype=np.uint8) for _ in range(20)]
    assert idx.query({"vpdq": _frames(reencoded + other)}) == []
    # Frames beyond the threshold do not count.
    assert idx.query({"vpdq": _frames([flip_bits(c, 40) for c in video])}) == []
    # Low-quality frames are left out on both sides.
    assert idx.query({"vpdq": _frames(reencoded, quality=20)}) == []


def test_stills_of_registered_videos_and_registered_photos_inside_videos_match_as_frames():
    video = [RNG.integers(0, 256, 32, dtype=np.uint8) for _ in range(12)]
    photo = RNG.integers(0, 256, 32, dtype=np.uint8)
    idx = Index()
    idx.add_case(5, [{"type": "vpdq", "frames": _frames(video), "item": "v1"}])
    idx.add_case(6, [_pdq(to_hex(photo), item="p9")])
    # A thumbnail of the video posted as an image: one of its frames, recompressed.
    got = idx.query({"pdq": [{"variant": "orig", "hash": to_hex(flip_bits(video[7], 9)), "quality": 80}]})
    assert [(c["case"], c["kind"], c["distance"], c["item"]) for c in got] == [(5, "frame", 9, "v1")]
    # A compilation video that shows the photo for a few seconds, from second 41 on.
    others = [RNG.integers(0, 256, 32, dtype=np.uint8) for _ in range(60)]
    frames = [[float(i), 90, to_hex(c)] for i, c in enumerate(others)]
    for s in (41, 42, 43):
        frames[s] = [float(s), 90, to_hex(flip_bits(photo, 6))]
    got = idx.query({"vpdq": frames})
    assert [(c["case"], c["kind"], c["distance"], c["item"], c["second"]) for c in got] == [(6, "frame", 6, "p9", 41.0)]
    # Frames too flat to say anything (quality < 50) are not asked; far frames do not match.
    assert idx.query({"vpdq": [[41.0, 20, to_hex(photo)]]}) == []
    assert idx.query({"pdq": [{"variant": "orig", "hash": to_hex(flip_bits(video[7], 40)), "quality": 80}]}) == []
    # Withdrawn: neither direction finds the case.
    idx.remove_case(5)
    idx.remove_case(6)
    assert idx.query({"pdq": [{"variant": "orig", "hash": to_hex(video[7]), "quality": 80}]}) == []
    assert idx.query({"vpdq": frames}) == []


def test_face_range_search_matches_brute_force_and_counts_agreeing_faces():
    registered = RNG.normal(0, 0.09, (500, 128)).astype(np.float32)
    idx = Index()
    idx.add_case(1, [{"type": "face", "descriptor": registered[i].tolist(), "item": "s1"} for i in range(3)])
    idx.add_case(2, [{"type": "face", "descriptor": v.tolist(), "item": f"s{i}"} for i, v in enumerate(registered[3:])])
    queries = np.concatenate([registered[:3] + RNG.normal(0, 0.015, (3, 128)), RNG.normal(0, 0.09, (20, 128))])
    for q in queries:
        got = idx.query({"faces": [{"descriptor": q.tolist()}]})
        dist = np.linalg.norm(registered - q, axis=1)
        expected_cases = {1 if i < 3 else 2 for i in np.nonzero(dist <= FACE_THRESHOLD)[0]}
        assert {c["case"] for c in got} == expected_cases
        for c in got:
            rows = range(3) if c["case"] == 1 else range(3, 500)
            assert c["distance"] == pytest.approx(min(dist[list(rows)]), abs=1e-3)
    # One selfie's descriptor near all three of case 1's faces: three agree.
    centre = registered[:3].mean(axis=0)
    idx2 = Index()
    idx2.add_case(1, [{"type": "face", "descriptor": (centre + RNG.normal(0, 0.01, 128)).tolist(), "item": f"s{i}"}
                      for i in range(3)])
    got = idx2.query({"faces": [{"descriptor": centre.tolist()}]})
    assert got[0]["faces_agreeing"] == 3


SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[3] / "node_modules/@vladmandic/face-api/demo"


@pytest.mark.skipif(not (SAMPLES / "sample2.jpg").exists(), reason="face-api sample photos not installed")
def test_real_faces_same_face_matches_other_people_do_not():
    from workers.signals.faces import describe_faces
    one = Image.open(SAMPLES / "sample2.jpg").convert("RGB")
    # Her selfie: the photo's largest face (the other, a woman looking down, is someone else).
    registered = [max(describe_faces(one), key=lambda f: f["box"]["width"])]
    idx = Index()
    idx.add_case(5, [{"type": "face", "descriptor": f["descriptor"], "item": "s1"} for f in registered])
    buf = io.BytesIO()
    ImageOps.mirror(one).resize((one.width // 2, one.height // 2)).save(buf, "JPEG", quality=50)
    found = describe_faces(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    got = idx.query({"faces": found})
    assert [(c["case"], c["kind"]) for c in got] == [(5, "face")] and got[0]["distance"] < FACE_THRESHOLD
    others = describe_faces(Image.open(SAMPLES / "sample5.jpg").convert("RGB"))
    assert others and idx.query({"faces": others}) == []


def test_registered_variants_find_crawled_copies_with_dihedral_variants():
    from workers.signals.images import pdq_dihedral, pdq_variants
    img = Image.new("RGB", (640, 480))
    d = ImageDraw.Draw(img)
    for i in range(0, 640, 40):
        d.rectangle([i, (i * 7) % 300, i + 35, (i * 7) % 300 + 170], fill=((i * 3) % 256, (i * 5) % 256, 200 - i % 200))
    d.ellipse([200, 120, 460, 380], fill=(250, 230, 40))
    idx = Index()
    idx.add_case(9, [{"type": "pdq", "item": "p1", **v} for v in pdq_variants(img)])
    rotated = img.rotate(90, expand=True)
    media = {"pdq": pdq_dihedral(rotated)}
    got = idx.query(media)
    assert [(c["case"], c["kind"]) for c in got] == [(9, "pdq")] and got[0]["distance"] <= 8


def test_confidence_prior_orders_evidence_and_flags_strong_matches():
    m = confidence.Model()
    exact = m.confidence([{"kind": "sha256", "distance": 0}])
    near = m.confidence([{"kind": "pdq", "distance": 2}])
    edge = m.confidence([{"kind": "pdq", "distance": 31}])
    face = m.confidence([{"kind": "face", "distance": 0.3, "faces_agreeing": 1}])
    both = m.confidence([{"kind": "face", "distance": 0.3, "faces_agreeing": 1}, {"kind": "pdq", "distance": 31}])
    assert exact >= confidence.FLAG_AT and near >= confidence.FLAG_AT
    assert edge < confidence.FLAG_AT and face < 0.5
    assert near > edge and both > edge and both > face
    # a still matched to a video frame weighs as the same PDQ distance between two stills
    assert m.confidence([{"kind": "frame", "distance": 9}]) == m.confidence([{"kind": "pdq", "distance": 9}])
    assert m.confidence([{"kind": "pdq", "distance": 10}], confidence.domain_logit(0, 20)) < \
        m.confidence([{"kind": "pdq", "distance": 10}], confidence.domain_logit(20, 0))


def test_confidence_retrains_from_decisions_and_is_calibrated():
    # Simulated staff decisions where PDQ matches near the threshold are more often wrong than
    # the prior says (e.g. sites with templated banners): the fitted model must learn that and
    # be calibrated on held-out decisions.
    rng = np.random.default_rng(1)
    X, y = [], []
    for _ in range(600):
        d = int(rng.integers(0, 32))
        truth = rng.random() < 1 / (1 + np.exp(-(4.0 - 0.3 * d)))
        X.append(confidence.features([{"kind": "pdq", "distance": d}]))
        y.append(1.0 if truth else 0.0)
    X, y = np.array(X), np.array(y)
    prior_brier = confidence.reliability(confidence.Model().predict(X), y)["brier"]
    fitted = confidence.fit(X, y)
    report = confidence.calibration(X, y)
    assert report["method"] == "5-fold" and report["brier"] < prior_brier
    prior_ece = confidence.reliability(confidence.Model().predict(X), y)["ece"]
    assert report["ece"] < 0.08 and report["ece"] < prior_ece / 3
    assert fitted.confidence([{"kind": "pdq", "distance": 28}]) < confidence.Model().confidence(
        [{"kind": "pdq", "distance": 28}])
    # A few decisions barely move the prior (MAP with a Gaussian prior on the weights).
    few = confidence.fit(X[:3], y[:3])
    assert np.abs(few.weights - confidence.PRIOR).max() < 1.5


def _at(centre: np.ndarray, r: float, rng=RNG) -> np.ndarray:
    u = rng.normal(0, 1, 128)
    return (centre + r * u / np.linalg.norm(u)).astype(np.float32)


def test_face_cohort_ranks_a_face_that_resembles_many_strangers_below_a_distinctive_one():
    distinctive, common = RNG.normal(0, 0.09, (2, 128)).astype(np.float32)
    idx = Index()
    idx.add_case(1, [{"type": "face", "descriptor": distinctive.tolist(), "item": "s1"}])
    idx.add_case(2, [{"type": "face", "descriptor": common.tolist(), "item": "s1"}])
    near_her = _at(distinctive, 0.45)
    # Before the crawl has seen enough faces there is no rank, only the distance.
    got = idx.query({"faces": [{"descriptor": near_her.tolist()}]}, observe=False)
    assert [c["case"] for c in got] == [1] and "face_closer" not in got[0]
    # The crawl: strangers far from everyone, and a crowd of look-alikes around the common face.
    strangers = RNG.normal(0, 0.09, (1500, 128)).astype(np.float32)
    crowd = np.stack([_at(common, r) for r in RNG.uniform(0.40, 0.60, 300)])
    for batch in np.array_split(np.concatenate([strangers, crowd]), 30):
        idx.query({"faces": [{"descriptor": v.tolist()} for v in batch]})
    assert len(idx.cohort) == 1800
    idx.query({"faces": [{"descriptor": strangers[0].tolist()}]})      # seen before: counted once
    assert len(idx.cohort) == 1800

    hers = idx.query({"faces": [{"descriptor": near_her.tolist()}]}, observe=False)
    lookalike = idx.query({"faces": [{"descriptor": _at(common, 0.45).tolist()}]}, observe=False)
    assert [c["case"] for c in hers] == [1] and [c["case"] for c in lookalike] == [2]
    h, l = hers[0], lookalike[0]
    assert h["cohort"] == l["cohort"] == 1800
    assert h["face_closer"] == 1.0                        # no crawled face is that close to her
    expected = 1 - np.mean(np.linalg.norm(np.concatenate([strangers, crowd]) - common, axis=1) < l["distance"] - 1e-4)
    # (each registered face's ranks are cached until the cohort changes by 2 %)
    assert l["face_closer"] == pytest.approx(expected, abs=0.02) and l["face_closer"] < 0.98
    m = confidence.Model()
    assert m.confidence([h]) > m.confidence([l])
    assert confidence.face_rarity(h) > confidence.face_rarity(l) > 0
    assert m.confidence([h]) < confidence.FLAG_AT           # a face alone still asks a human,
    best_face = {"kind": "face", "distance": 0.0, "faces_agreeing": 50, "face_closer": 1.0, "cohort": 10**6}
    assert m.confidence([best_face]) < confidence.FLAG_AT   # however close, rare and agreed

    # A withdrawn case leaves no cached rank behind; the cohort keeps its faces (crawled, not hers).
    idx.remove_case(2)
    assert idx.query({"faces": [{"descriptor": _at(common, 0.3).tolist()}]}, observe=False) == []


def test_face_cohort_is_a_bounded_uniform_sample():
    cohort = index_module.FaceCohort(max_size=500)
    data = RNG.normal(0, 0.09, (5000, 128)).astype(np.float32)
    data[:2500, 0] += 10.0                                     # first half marked
    assert cohort.add(data) == 5000 and cohort.add(data[:10]) == 0
    assert len(cohort) == 500
    kept_first_half = np.mean(cohort.vectors()[:, 0] > 5)
    assert 0.4 < kept_first_half < 0.6                        # not just the first 500 seen
