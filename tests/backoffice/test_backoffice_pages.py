"""Back-office pages that read at a glance: error pages in the layout and the reader's language."""
from conftest import make_instance, staff_client

from workers.jobs import rq_form


def test_error_pages_have_the_layout_and_speak_japanese(tmp_path):
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}")
    client = staff_client(inst, role="lawyer", address="lawyer@example.org")
    r = client.get("/review/?lang=ja")
    page = r.get_data(as_text=True)
    assert r.status_code == 403 and 'class="topbar"' in page and "この役割では開けません" in page
    assert "backoffice.css" in page and '<html lang="ja">' in page
    r = client.get("/takedowns/999999")
    assert r.status_code == 404 and "見つかりません" in r.get_data(as_text=True)   # the language stays chosen
    r = client.get("/takedowns/999999?lang=en")
    assert r.status_code == 404 and "Not found" in r.get_data(as_text=True)

    from backoffice import create_app
    app = create_app(inst)
    app.add_url_rule("/boom", "boom", lambda: 1 / 0)     # a page that fails, seen as staff see it
    app.config["PROPAGATE_EXCEPTIONS"] = False
    r = app.test_client().get("/boom?lang=ja")
    page = r.get_data(as_text=True)
    assert r.status_code == 500 and "うまくいきませんでした" in page and 'class="topbar"' in page
    assert "ZeroDivisionError" not in page


def test_a_pdq_match_is_said_in_words(tmp_path):
    """"same picture, flipped", not "pdq: 4 bits (flipy / full)"."""
    from backoffice import create_app
    from backoffice.review import pdq_reason
    app = create_app(make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}"))
    with app.test_request_context("/?lang=en"):
        assert pdq_reason(4, {"query_variant": "flipy", "variant": "full"}) == "same picture, flipped"
        assert pdq_reason(0, {"query_variant": "orig", "variant": "trimmed"}) == "same picture, its border cut off"
        assert pdq_reason(27, {"query_variant": "rot180", "variant": "crop-16:9"}) == \
            "similar picture (look closely), turned upside down, cropped to 16:9"
    with app.test_request_context("/?lang=ja"):
        assert pdq_reason(4, {"query_variant": "flipy", "variant": "full"}) == "同じ画像、左右反転"


def test_health_never_says_nothing_needs_attention_without_a_backup():
    from datetime import timedelta

    from store.models import utcnow
    from workers.system.health import problem_codes
    base = {"queue": {"reachable": True, "workers": [{"stale": False}], "queues": [], "failed": []},
            "disk": {}, "database_ok": True}
    assert {"code": "no_backup"} in problem_codes({**base, "last_backup": None})
    old = (utcnow() - timedelta(days=30)).isoformat(timespec="seconds") + "Z"
    assert problem_codes({**base, "last_backup": old})[0]["code"] == "backup_old"
    fresh = utcnow().isoformat(timespec="seconds") + "Z"
    assert problem_codes({**base, "last_backup": fresh}) == []
    assert problem_codes({**base, "last_backup": fresh, "notice_settings_missing": ["org_address"]}) == [
        {"code": "notice_settings", "names": "org_address"}]


def test_staff_add_one_domain_and_crawl_one_url(tmp_path, redis_url):
    """Without a CSV or a patrol seed: one domain typed in, one URL crawled (the same job as `kesu crawl`)."""
    import re

    import redis as redis_lib
    from conftest import csrf
    from rq import Queue
    from sqlalchemy import select

    from store.models import AuditEntry, CrawlJob, Domain
    url = re.sub(r"/\d+$", "", redis_url) + "/13"
    redis_lib.Redis.from_url(url).flushdb()
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", redis_url=url)
    client = staff_client(inst)
    token = csrf(client, "/domains/?lang=en")
    r = client.post("/domains/add", data={"csrf_token": token, "domain": "Tube.Example", "site_name": "Tube",
                                          "contact_email": "abuse@tube.example",
                                          "patrol_seeds": "https://tube.example/new"})
    assert r.status_code == 302 and "/domains/" in r.location
    with inst.session() as s:
        d = s.execute(select(Domain)).scalar_one()
        assert (d.domain, d.contact_email, d.patrol_seeds) == ("tube.example", "abuse@tube.example",
                                                                ["https://tube.example/new"])
    again = client.post("/domains/add", data={"csrf_token": token, "domain": "tube.example"}, follow_redirects=True)
    assert "already in the domain database" in again.get_data(as_text=True)
    bad = client.post("/domains/add", data={"csrf_token": token, "domain": "tube.example", "contact_email": "nope"},
                      follow_redirects=True)
    assert "Not added" in bad.get_data(as_text=True)

    r = client.post("/domains/crawl", data={"csrf_token": token, "url": "https://tube.example/watch/1", "depth": "1"},
                    follow_redirects=True)
    assert "started" in r.get_data(as_text=True)
    with inst.session() as s:
        job = s.execute(select(CrawlJob)).scalar_one()
        assert (job.url, job.depth, job.status) == ("https://tube.example/watch/1", 1, "queued")
        assert s.execute(select(AuditEntry).where(AuditEntry.action == "crawl_request")).scalar_one()
    q = Queue("crawl", connection=redis_lib.Redis.from_url(url))
    assert [(j.func_name, j.args) for j in q.jobs] == [rq_form("crawl", job.id)]
    assert "http://" in client.post("/domains/crawl", data={"csrf_token": token, "url": "javascript:alert(1)"},
                                    follow_redirects=True).get_data(as_text=True)
    redis_lib.Redis.from_url(url).flushdb()
