"""Staff add URLs to a case in the back office: each page is really captured (Chromium on a
loopback site), matched by the real matcher against the case taken in through the sealed-box
path, and becomes one takedown item of the case (idempotent per case and URL)."""
import hashlib
import json
import time
import uuid

import pytest
from conftest import csrf, make_instance, staff_client
from pipeline import picture
from sqlalchemy import func, select

from crypto.sealing import seal
from store import cases
from store.models import AuditEntry, Case, CrawlJob, Match, Media, Takedown
from workers.matching import matcher as match
from workers.signals.images import decode_image, pdq_variants
from workers.system import context

pytestmark = pytest.mark.browser
CRAWL = dict(crawl_delay=0, crawl_page_seconds=20, crawl_idle_seconds=0.8, crawl_faces=0)


def new_case(instance, data: bytes) -> int:
    """A case made as the intake makes it: one photo's PDQ variants and file hashes, sealed, taken in."""
    from workers.cases.takein import take_in_submission
    sigs = [{"type": "pdq", "item": "p1", **v} for v in pdq_variants(decode_image(data))]
    sigs += [{"type": "sha256", "hash": hashlib.sha256(data).hexdigest(), "item": "p1"},
             {"type": "md5", "hash": hashlib.md5(data).hexdigest(), "item": "p1"}]
    payload = {"version": 1, "category": "adult_ncii", "language": "ja",
               "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-11-22"},
               "signals": sigs, "items": [{"item": "p1", "kind": "photo", "label": "photo 1"}]}
    key_id, _ = instance.public_key()
    sealed = seal(instance.private_keys().public_key, json.dumps(payload).encode())
    _, _, case_id, sub_id = cases.create_case(instance, key_id, sealed)
    assert take_in_submission(instance, sub_id)["status"] == "taken_in"
    return case_id


def wait_jobs(inst, case_id, n, timeout=120):
    """Until the case's n crawl jobs are finished (a condition polled, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        with inst.session() as s:
            states = list(s.execute(select(CrawlJob.status).where(CrawlJob.case_id == case_id)).scalars())
        if len(states) == n and all(st in ("done", "error") for st in states):
            return states
        assert time.monotonic() < deadline, f"captures not finished: {states}"
        time.sleep(0.2)


@pytest.fixture
def site(static_server):
    sub = uuid.uuid4().hex[:8]
    folder = static_server.files / sub
    folder.mkdir()
    hers, other = picture(31), picture(32)
    (folder / "a.jpg").write_bytes(hers)
    (folder / "b.jpg").write_bytes(other)
    (folder / "match.html").write_text('<!doctype html><title>p</title><p>post</p><img src="a.jpg" width="360">')
    (folder / "plain.html").write_text('<!doctype html><title>q</title><p>other</p><img src="b.jpg" width="360">')
    return f"{static_server}/files/{sub}", hers


def test_staff_add_urls_each_captured_matched_and_a_takedown(tmp_path, database_url, site):
    base, hers = site
    inst = make_instance(tmp_path / "instance", database_url, **CRAWL)
    match.reset()
    context.set_instance(inst)
    case_id = new_case(inst, hers)
    client = staff_client(inst)

    assert client.get(f"/manual/?case={case_id}").status_code == 302
    page = client.get(f"/manual/cases/{case_id}?lang=en")
    assert page.status_code == 200 and 'id="urls"' in page.get_data(as_text=True)
    host = base.split("//", 1)[1].split("/", 1)[0]
    pasted = (f"{base}/match.html\n  {base}/plain.html#top\n"
              f"{base.replace('http://', 'HTTP://')}/match.html\nnot-a-url, ftp://x.example/a")
    r = client.post(f"/manual/cases/{case_id}/urls", data={"urls": pasted, "csrf_token": csrf(client, f"/manual/cases/{case_id}")})
    assert r.status_code == 302
    states = wait_jobs(inst, case_id, 2)
    assert states == ["done", "done"]
    assert client.get(f"/manual/cases/{case_id}").status_code == 200    # opening the case links what matched

    with inst.session() as s:
        tds = {t.url: t for t in s.execute(select(Takedown).where(Takedown.case_id == case_id)).scalars()}
        jobs = s.execute(select(CrawlJob).where(CrawlJob.case_id == case_id)).scalars().all()
        assert {j.depth for j in jobs} == {0} and {j.requested_by for j in jobs} == {"staff:1"}
        assert set(tds) == {f"{base}/match.html", f"{base}/plain.html"}
        assert all(t.status == "ongoing" for t in tds.values())
        hit = tds[f"{base}/match.html"]
        assert [m["url"] for m in hit.media] == [f"{base}/a.jpg"]                      # linked for the re-check
        assert not tds[f"{base}/plain.html"].media
        kinds = set(s.execute(select(Match.kind).join(Media, Media.id == Match.media_id)
                              .where(Match.case_id == case_id, Media.url == f"{base}/a.jpg")).scalars())
        assert {"pdq", "md5", "sha256"} <= kinds
        assert s.execute(select(func.count()).select_from(Match).join(Media, Media.id == Match.media_id)
                         .where(Media.url == f"{base}/b.jpg")).scalar() == 0
        assert s.get(Case, case_id).status == "found"
        added = s.execute(select(AuditEntry).where(AuditEntry.action == "manual.add")).scalars().one()
        assert added.detail == {"added": 2, "known": 0, "bad": 2} and host not in json.dumps(added.detail)

    # the same URLs again: nothing new, no new capture
    r = client.post(f"/manual/cases/{case_id}/urls", data={"urls": f"{base}/plain.html\n{base}/match.html",
                                                           "csrf_token": csrf(client, f"/manual/cases/{case_id}")})
    assert r.status_code == 302
    with inst.session() as s:
        assert s.execute(select(func.count()).select_from(Takedown).where(Takedown.case_id == case_id)).scalar() == 2
        assert s.execute(select(func.count()).select_from(CrawlJob).where(CrawlJob.case_id == case_id)).scalar() == 2
    html = client.get(f"/manual/cases/{case_id}?lang=en").get_data(as_text=True)
    assert f"KESU-{hit.id}" in html and f"{base}/plain.html" in html

    # the victim's answer, recorded by staff from her reply
    token = csrf(client, f"/manual/cases/{case_id}")
    assert client.post(f"/manual/cases/{case_id}/answer", data={"answer": "close", "csrf_token": token}).status_code == 302
    with inst.session() as s:
        assert s.get(Case, case_id).closed_on is not None
        assert s.get(Takedown, hit.id).status == "on_hold"
    assert client.post(f"/manual/cases/{case_id}/answer", data={"answer": "continue", "csrf_token": token}).status_code == 302
    with inst.session() as s:
        assert s.get(Case, case_id).closed_on is None and s.get(Takedown, hit.id).status == "ongoing"
    assert client.post(f"/manual/cases/{case_id}/answer", data={"answer": "erase", "csrf_token": token}).status_code == 400
    assert client.get("/manual/cases/999999").status_code == 404
    match.reset()


def test_url_list_parsing():
    from backoffice.manual import parse_urls
    good, bad = parse_urls("https://Example.com/a#x\nhttps://example.com/a, http://b.example/p?q=1 \n"
                           "javascript:alert(1)  example.org/nohttp")
    assert good == ["https://example.com/a", "http://b.example/p?q=1"]
    assert bad == ["javascript:alert(1)", "example.org/nohttp"]


def test_lawyers_cannot_add_urls(instance):
    case_id = new_case(instance, picture(33))
    client = staff_client(instance, role="lawyer", address="lawyer@example.org")
    assert client.get(f"/manual/cases/{case_id}").status_code == 403
