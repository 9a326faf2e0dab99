"""The matcher on a real instance (SQLite, and PostgreSQL when configured): cases taken in
through the real sealed-box path, the index built from the database, the crawler's hook,
idempotent Match rows, retroactive matching of stored media, withdrawal, freshness, retraining."""
import hashlib
import io
import json
import subprocess

import numpy as np
import pytest
from conftest import redis_dump, staff_client
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from sqlalchemy import func, select

from crypto.sealing import seal
from store import cases
from store.models import Capture, Case, Match, Media
from workers.matching import matcher as match
from workers.signals.images import pdq_dihedral, pdq_variants
from workers.signals.videos import vpdq
from workers.system import context


@pytest.fixture(autouse=True)
def fresh_matcher(instance):
    match.reset()
    context.set_instance(instance)
    yield
    match.reset()


def picture(seed: int, size=(400, 300)) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(25):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        w, h = int(rng.integers(20, 160)), int(rng.integers(20, 160))
        shape = d.ellipse if rng.random() < 0.5 else d.rectangle
        shape([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img.filter(ImageFilter.GaussianBlur(1))


def jpeg(img: Image.Image, quality=90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def registered_signals(img: Image.Image, data: bytes, item="p1") -> list[dict]:
    """What the victim's browser sends for a photo: PDQ variants and file hashes."""
    sigs = [{"type": "pdq", "item": item, **v} for v in pdq_variants(img)]
    sigs.append({"type": "sha256", "hash": hashlib.sha256(data).hexdigest(), "item": item})
    sigs.append({"type": "md5", "hash": hashlib.md5(data).hexdigest(), "item": item})
    return sigs


def crawled_signals(data: bytes) -> dict:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
            "pdq": pdq_dihedral(img)}


def new_case(instance, signals, category="adult_ncii") -> int:
    """A case made exactly as the intake makes it: sealed payload, then take-in."""
    from workers.cases.takein import take_in_submission
    items = sorted({s["item"] for s in signals})
    kinds = {"p": "photo", "v": "video", "s": "selfie"}
    payload = {"version": 1, "category": category, "language": "ja",
               "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-11-22"},
               "signals": signals, "items": [{"item": i, "kind": kinds[i[0]], "label": f"photo {i}"} for i in items]}
    key_id, _ = instance.public_key()
    sealed = seal(instance.private_keys().public_key, json.dumps(payload).encode())
    _, _, case_id, sub_id = cases.create_case(instance, key_id, sealed)
    assert take_in_submission(instance, sub_id)["status"] == "taken_in"
    return case_id


def stored_media(instance, url: str, signals: dict) -> int:
    """A media a capture kept only as sealed signals (it matched nothing when crawled)."""
    with instance.session() as s:
        cap = Capture(url="http://site.example/page", final_url="http://site.example/page", status="ok")
        s.add(cap)
        s.flush()
        media = Media(capture_id=cap.id, url=url, sha256_key=hashlib.sha256(signals["sha256"].encode()).hexdigest(),
                      mime="image/jpeg", size=1,
                      signals=seal(instance.private_keys().public_key, json.dumps(signals).encode()))
        s.add(media)
        s.flush()
        return media.id


def test_hook_finds_reuploads_and_records_matches_idempotently(instance):
    img = picture(1)
    data = jpeg(img)
    case_id = new_case(instance, registered_signals(img, data))
    other = new_case(instance, registered_signals(picture(2), jpeg(picture(2))))

    # The very file: sha256, md5 and pdq agree.
    got = match.match_media(instance, crawled_signals(data), "http://site.example/a.jpg")
    assert {(c["case"], c["kind"]) for c in got} == {(case_id, "sha256"), (case_id, "md5"), (case_id, "pdq")}
    assert all(c["flagged"] and c["confidence"] >= 0.95 for c in got)

    # A mirrored, smaller, recompressed re-upload: only PDQ (through the dihedral variants).
    reupload = jpeg(ImageOps.mirror(img).resize((200, 150)), quality=40)
    got = match.match_media(instance, crawled_signals(reupload), "http://site.example/b.jpg")
    assert [(c["case"], c["kind"]) for c in got] == [(case_id, "pdq")]
    assert got[0]["distance"] <= 31 and got[0]["item"] == "p1"

    # Unrelated picture: nothing. The hook wrote nothing.
    assert match.match_media(instance, crawled_signals(jpeg(picture(3))), "") == []
    with instance.session() as s:
        assert s.execute(select(func.count()).select_from(Match)).scalar() == 0

    media_id = stored_media(instance, "http://site.example/b.jpg", crawled_signals(reupload))
    first = match.record_matches(instance, media_id, got)
    again = match.record_matches(instance, media_id, match.match_media(instance, crawled_signals(reupload)))
    assert first == again and len(first) == 1
    with instance.session() as s:
        row = s.get(Match, first[0])
        assert (row.case_id, row.kind, row.state) == (case_id, "pdq", "new")
        assert row.evidence["item"] == "p1" and "hash" not in json.dumps(row.evidence)
        assert s.get(Case, case_id).status == "found" and s.get(Case, other).status != "found"


def test_retroactive_match_of_media_crawled_before_the_case(instance):
    img = picture(4)
    seen = jpeg(img.resize((300, 225)), quality=60)
    earlier = stored_media(instance, "http://old.example/x.jpg", crawled_signals(seen))
    stored_media(instance, "http://old.example/y.jpg", crawled_signals(jpeg(picture(5))))
    match.matcher(instance)                        # built before the case exists

    case_id = new_case(instance, registered_signals(img, jpeg(img)))
    result = match.case_added(case_id)             # the job after take-in (argument: the id)
    assert result["retro_matched"] == 1
    with instance.session() as s:
        rows = s.execute(select(Match)).scalars().all()
        assert [(r.case_id, r.media_id, r.kind) for r in rows] == [(case_id, earlier, "pdq")]
    # ... and the case is searchable for new crawls at once.
    assert match.match_media(instance, crawled_signals(seen))[0]["case"] == case_id
    # A retried job duplicates nothing.
    match.case_added(case_id)
    with instance.session() as s:
        assert s.execute(select(func.count()).select_from(Match)).scalar() == 1


def slideshow(tmp_path, images: list[Image.Image], seconds_each: int = 3) -> bytes:
    """An H.264 video showing each image for a few seconds, as compilations of photos are made."""
    for i, img in enumerate(images):
        img.save(tmp_path / f"slide{i:02d}.png")
    out = tmp_path / "slides.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-framerate", f"1/{seconds_each}",
                    "-i", str(tmp_path / "slide%02d.png"), "-vf", "scale=320:240,fps=10", "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", str(out)], check=True, timeout=120)
    return out.read_bytes()


def test_registered_photo_inside_a_crawled_video_and_a_still_of_a_registered_video(instance, tmp_path):
    # Her photo is one slide of a compilation video found on a site: a "frame" match that says
    # where in the video it is; nobody else's case is touched.
    img = picture(30)
    photo_case = new_case(instance, registered_signals(img, jpeg(img)))
    other = new_case(instance, registered_signals(picture(31), jpeg(picture(31))))
    video = slideshow(tmp_path, [picture(32), picture(33), img, picture(34)])
    got = match.match_media(instance, {"sha256": hashlib.sha256(video).hexdigest(), "vpdq": vpdq(video)})
    assert [(c["case"], c["kind"], c["item"]) for c in got] == [(photo_case, "frame", "p1")]
    assert 6 <= got[0]["second"] < 9 and got[0]["distance"] <= 31
    # Staff see where in the video it is.
    match.record_matches(instance, stored_media(instance, "http://site.example/c.mp4",
                                                {"sha256": hashlib.sha256(video).hexdigest()}), got)
    page = staff_client(instance).get("/review/?lang=en").get_data(as_text=True)
    assert f"a registered photo, seen in this video at 0:0{int(got[0]['second'])}" in page
    # Her registered video, and a thumbnail of it posted as an image: a frame of the video.
    video_case = new_case(instance, [{"type": "vpdq", "frames": vpdq(video), "item": "v1"}])
    match.refresh(instance)                      # what the job after take-in does
    thumb = jpeg(img.resize((240, 180)), quality=50)
    got = match.match_media(instance, crawled_signals(thumb))
    assert {(c["case"], c["kind"]) for c in got} == {(photo_case, "pdq"), (video_case, "frame")}
    assert other not in {c["case"] for c in got}


def test_crawl_report_names_frame_matches_with_the_kinds_design_fixes(instance):
    # A crawled picture matched case A directly (pdq, 12 bits) and as a frame of A's video
    # (8 bits), and case B only as a frame: the report names each (case, media, kind) once.
    from store.models import CrawlJob
    from workers.capture.crawl import report
    a = new_case(instance, registered_signals(picture(40), jpeg(picture(40))))
    b = new_case(instance, registered_signals(picture(41), jpeg(picture(41))))
    with instance.session() as s:
        job = CrawlJob(url="http://site.example/page", status="done")
        s.add(job)
        s.flush()
        job_id = job.id
    media_id = stored_media(instance, "http://site.example/x.jpg", crawled_signals(jpeg(picture(42))))
    with instance.session() as s:
        s.get(Media, media_id).capture.job_id = job_id
        for case, kind, d, p in ((a, "pdq", 12, 0.9), (a, "frame", 8, 0.93), (b, "frame", 20, 0.7)):
            s.add(Match(case_id=case, media_id=media_id, kind=kind, distance=d, confidence=p, state="new"))
    got = sorted((m["case"], m["kind"], m["distance"], m.get("via")) for m in report(instance, job_id)["matches"])
    assert got == [(str(a), "pdq", 8, "frame"), (str(b), "pdq", 20, "frame")]


def test_withdrawn_case_is_gone_and_new_cases_are_found_without_a_job(instance):
    img = picture(6)
    case_id = new_case(instance, registered_signals(img, jpeg(img)))
    crawled = crawled_signals(jpeg(img, quality=50))
    assert match.match_media(instance, crawled)[0]["case"] == case_id

    cases.withdraw(instance, case_id)              # the hook drops it from this process's index
    assert match.match_media(instance, crawled) == []
    assert case_id not in match.matcher(instance).case_ids()

    # A case taken in while no job reached the matcher: the refresh (run within
    # REFRESH_SECONDS before a query, and by the scheduler) brings it in.
    img2 = picture(7)
    case2 = new_case(instance, registered_signals(img2, jpeg(img2)))
    crawled2 = crawled_signals(jpeg(img2, quality=50))
    assert match.refresh(instance)["added"] == 1
    assert match.match_media(instance, crawled2)[0]["case"] == case2

    # A withdrawal in another process (rows deleted, no hook here) is noticed by the refresh.
    hooks = list(cases.WITHDRAW_HOOKS)
    cases.WITHDRAW_HOOKS.clear()
    try:
        cases.withdraw(instance, case2)
    finally:
        cases.WITHDRAW_HOOKS.extend(hooks)
    assert match.refresh(instance)["removed"] == 1
    assert match.match_media(instance, crawled2) == []


def test_index_is_built_from_the_database_in_a_fresh_process_state(instance):
    img = picture(8)
    case_id = new_case(instance, registered_signals(img, jpeg(img)) +
                       [{"type": "face", "descriptor": [0.01 * i for i in range(128)], "item": "s1"}])
    match.reset()                                  # a restarted matcher
    idx = match.matcher(instance)
    assert idx.case_ids() == {case_id}
    assert idx.stats()["faces"] == 1 and idx.stats()["pdq"] >= 1
    got = match.match_media(instance, {"faces": [{"descriptor": [0.01 * i + 0.001 for i in range(128)]}]})
    assert [(c["case"], c["kind"]) for c in got] == [(case_id, "face")] and not got[0]["flagged"]


def test_retrain_from_staff_decisions(instance):
    img = picture(9)
    new_case(instance, registered_signals(img, jpeg(img)))
    ids = []
    for n in range(12):
        reupload = jpeg(img.resize((400 - 10 * n, 300 - 7 * n)), quality=30 + n * 5)
        media_id = stored_media(instance, f"http://bad.example/{n}.jpg", crawled_signals(reupload))
        ids += match.record_matches(instance, media_id, match.match_media(instance, crawled_signals(reupload)))
    with instance.session() as s:
        for i, row in enumerate(s.execute(select(Match).where(Match.id.in_(ids))).scalars()):
            row.state = "confirmed" if i % 3 else "rejected"
    report = match.retrain(instance)
    assert report["trained_on"] == 12
    assert report["calibration"]["n"] == 12 and report["calibration"]["brier"] is not None
    assert (instance.settings.instance / match.MODEL_FILE).exists()
    match.reset()
    assert match.model(instance).trained_on == 12


def test_candidates_name_the_minor_category_so_the_crawler_keeps_no_bytes(instance):
    img = picture(10)
    case_id = new_case(instance, registered_signals(img, jpeg(img)), category="minor")
    got = match.match_media(instance, crawled_signals(jpeg(img, quality=70)))
    assert [(c["case"], c["category"]) for c in got] == [(case_id, "minor")]
    cases.withdraw(instance, case_id)
    assert match.case_added(case_id) == {"case": case_id, "retro_matched": 0}   # a late job: nothing
    assert match.match_media(instance, crawled_signals(jpeg(img, quality=70))) == []


def test_review_queue_and_decisions_on_this_database(instance):
    """The review queue's SQL and decide() (the browser test covers the page on SQLite)."""
    from backoffice import review
    from store.models import Review, Takedown
    imgs = [picture(20 + n) for n in range(3)]
    case_ids = [new_case(instance, registered_signals(im, jpeg(im))) for im in imgs]
    media = []
    for n, im in enumerate(imgs):
        data = jpeg(im) if n == 0 else jpeg(im.resize((300 - 40 * n, 225 - 30 * n)), quality=40)
        media.append(stored_media(instance, f"http://s{n}.example/{n}.jpg", crawled_signals(data)))
        match.match_stored_media(instance, media[-1])
    rows, total = review.queue_page(instance, "open", 1)
    assert total == 3 and rows[0]["key"] == f"{case_ids[0]}:{media[0]}" and rows[0]["flagged"]
    assert [r["confidence"] for r in rows] == sorted((r["confidence"] for r in rows), reverse=True)
    pairs = [(r["case"], r["media"]) for r in rows]
    out = review.decide(instance, "staff:test", None, pairs[:2], "confirm")
    again = review.decide(instance, "staff:test", None, pairs[:2], "confirm")
    assert len(out["takedowns"]) == 2 and again["takedowns"] == out["takedowns"] and again["changed"] == 0
    review.decide(instance, "staff:test", None, pairs[2:], "reject")
    assert review.queue_page(instance, "open", 1) == ([], 0)
    assert review.queue_page(instance, "confirmed", 1)[1] == 2
    with instance.session() as s:
        tds = s.execute(select(Takedown)).scalars().all()
        assert sorted(t.case_id for t in tds) == sorted(p[0] for p in pairs[:2])
        assert all(t.url == "http://site.example/page" for t in tds)
        assert s.execute(select(func.count()).select_from(Review)).scalar() >= 5


def test_jobs_on_real_redis_carry_ids_only_and_the_index_survives_between_jobs(instance, redis_url, caplog):
    """A SimpleWorker (no fork, as `kesu worker --queues match` runs) on real Redis: the
    index built by the first job serves the next; nothing in Redis holds a signal."""
    import logging

    import redis
    from rq import Queue, SimpleWorker

    img = picture(30)
    signals = registered_signals(img, jpeg(img))
    case_id = new_case(instance, signals)
    crawled = crawled_signals(jpeg(img, quality=60))
    media_id = stored_media(instance, "http://late.example/1.jpg", crawled)
    conn = redis.Redis.from_url(redis_url)
    q = Queue("match", connection=conn)
    caplog.set_level(logging.DEBUG)

    q.enqueue(match.case_added, case_id)
    SimpleWorker([q], connection=conn).work(burst=True)
    built = match.matcher(instance)
    q.enqueue(match.match_media_job, media_id)
    SimpleWorker([q], connection=conn).work(burst=True)
    assert match.matcher(instance) is built                    # same in-memory index, not rebuilt
    with instance.session() as s:
        assert s.execute(select(func.count()).select_from(Match).where(Match.media_id == media_id)).scalar() == 1

    secrets = {s["hash"] for s in signals} | {p["hash"] for p in crawled["pdq"]} | {crawled["sha256"], crawled["md5"]}
    text = redis_dump(conn)
    assert text and not [h for h in secrets if h.encode() in text or bytes.fromhex(h) in text]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [h for h in secrets if h in logged]
