"""A confirmed match, driven to removal: route from the domain's history, notice in Japanese and
English, one click to send through real Redis and a real `kesu worker` to a loopback SMTP server
(aiosmtpd), the victim's short confirmation, a Redis flush that loses nothing, the re-check after
the page is taken down on a loopback site, the statistics and the domain's prediction."""
import email
import email.policy
import http.server
import re
import socket
import threading
from datetime import timedelta

import pyotp
import pytest
from conftest import TEST_PASSPHRASE, csrf, kesu_cli, make_instance, staff_client
from sqlalchemy import select
from takedown_helpers import make_case, make_domain, make_takedown

from store.models import Capture, Domain, Match, Media, Notice, Schedule, Takedown, TakedownEvent, utcnow
from workers.system import context, schedule
from workers.takedown import notify, predict, recheck

ORG = {"org_name": "NPO Example", "org_email": "help@example.org", "org_phone": "03-0000-0000",
       "smtp_from": "notices@example.org", "org_address": "1-2-3 Example-cho, Tokyo", "org_responsible": "Hanako Example",
       "victim_mail_from": "Info <info@example.org>"}


# --- loopback servers ------------------------------------------------------------------------------

class SMTPSink:
    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        with self.cond:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self.cond.notify_all()
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    """STARTTLS with a certificate the instance trusts through smtp_ca_file (tests/smtp_helpers.py)."""
    from smtp_helpers import smtp_server
    sink = SMTPSink()
    with smtp_server(sink) as (port, ca_file):
        sink.port, sink.ca_file = port, ca_file
        yield sink


class Site:
    """A loopback web site whose pages the test can take down or change."""

    def __init__(self):
        self.pages: dict[str, tuple[int, bytes]] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                status, body = pages.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.server.shutdown()


@pytest.fixture
def own_redis(redis_url):
    """The test Redis server, on a database of its own (other suites flush database 15 as they run)."""
    import redis as redis_lib
    url = re.sub(r"/\d+$", "", redis_url) + "/11"
    conn = redis_lib.Redis.from_url(url)
    conn.flushdb()
    yield url
    conn.flushdb()


def worker_env(inst, redis_url, smtp):
    return {"KESU_INSTANCE": str(inst.settings.instance), "KESU_DATABASE_URL": inst.settings.database_url,
            "KESU_REDIS_URL": redis_url, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE,
            "KESU_SMTP_HOST": "127.0.0.1", "KESU_SMTP_PORT": str(smtp.port), "KESU_SMTP_CA_FILE": smtp.ca_file,
            "KESU_CRAWL_ALLOW_PRIVATE": "1",
            **{f"KESU_{k.upper()}": v for k, v in ORG.items()}}


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


# --- the flow --------------------------------------------------------------------------------------

def test_confirmed_match_to_removal(tmp_path, database_url, own_redis, smtp, site):
    redis_url = own_redis
    inst = make_instance(tmp_path / "instance", database_url,
                         redis_url=redis_url, smtp_host="127.0.0.1", smtp_port=smtp.port,
                         smtp_ca_file=smtp.ca_file, **ORG)
    now = utcnow()
    # A domain whose administrator ignored four earlier requests; its hosting provider has an abuse desk.
    dom = make_domain(inst, "tube.example", contact_email="admin@tube.example", hosting="Example Hosting",
                      contacts={"host": {"email": "abuse@hosting.example", "name": "Example Hosting"}})
    old_case = make_case(inst)
    for i in range(4):
        make_takedown(inst, old_case, dom, f"https://tube.example/old/{i}", route="site", status="still_up",
                      requested_at=now - timedelta(days=20), deadline_at=now - timedelta(days=18),
                      created_at=now - timedelta(days=20))
    predict.update_domain(inst, dom)

    # The confirmed match: a case (with a contact), the captured page, its media, the match, the takedown.
    media_body = b"\xff\xd8 generated jpeg bytes for the test \xff\xd9"
    page_url, media_url = site.url + "/v/1", site.url + "/m/1.jpg"
    site.pages["/v/1"] = (200, '<html><img src="/m/1.jpg"></html>'.encode())
    site.pages["/m/1.jpg"] = (200, media_body)
    case = make_case(inst, category="adult_ncii", language="ja", contact="victim@example.net")
    with inst.session() as s:
        cap = Capture(url=page_url, final_url=page_url, status="ok", http_status=200, server_ip="127.0.0.1")
        s.add(cap)
        s.flush()
        med = Media(capture_id=cap.id, url=media_url, sha256_key=recheck.media_key(inst.pepper, media_body),
                    mime="image/jpeg", size=len(media_body))
        s.add(med)
        s.flush()
        s.add(Match(case_id=case, media_id=med.id, kind="sha256", state="confirmed", confidence=1.0))
    td = make_takedown(inst, case, dom, page_url)

    # The route comes from the domain's history: the site is skipped, the host is first.
    with inst.session() as s:
        domain = s.get(Domain, dom)
        steps = predict.recommend_routes(domain, "adult_ncii", domain.prediction)
    assert [x["route"] for x in steps][:4] == ["site", "host", "registrar", "search_engine"]
    assert steps[0]["skip"] and predict.first_route(steps) == "host"

    client = staff_client(inst)
    page = client.get(f"/takedowns/{td}?lang=en").get_data(as_text=True)
    assert "Hosting provider" in page and page_url in page and "abuse@hosting.example" in page
    assert "Too little history to predict yet (4 finished request(s) so far)" in page   # 4 ignored: no rate yet
    # The notice is in the site's language by default (a Japanese site: Japanese, whatever the
    # victim's language); choosing another one for the notice leaves the page in the staff's language,
    # and the staff's language stays chosen on the next page.
    assert '<textarea id="notice-text" readonly rows="24" lang="ja">' in page and '<html lang="en">' in page
    page = client.get(f"/takedowns/{td}?notice_lang=en").get_data(as_text=True)
    assert '<textarea id="notice-text" readonly rows="24" lang="en">' in page and '<html lang="en">' in page
    assert '<html lang="en">' in client.get("/takedowns/").get_data(as_text=True)
    # The notice in both languages.
    with inst.session() as s:
        ja = notify.render(inst, s, s.get(Takedown, td), "host", "ja")
        en = notify.render(inst, s, s.get(Takedown, td), "host", "en")
    for r in (ja, en):
        assert page_url in r.body and r.address == "abuse@hosting.example"
    assert "2日" in ja.body and "第4条" in ja.body and "two days" in en.body

    # One click: send (Japanese). Then Redis loses the job; the sweep finds the notice again.
    # The send step first confirms the recipient and the language; only the confirmation sends.
    token = csrf(client, f"/takedowns/{td}")
    r = client.post(f"/takedowns/{td}/send?lang=en", data={"route": "host", "lang": "ja", "csrf_token": token,
                                                           "address": "abuse@hosting.example"})
    confirm = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="confirm-send"' in confirm
    assert re.search(r'id="confirm-recipient">abuse@hosting\.example<', confirm)
    assert re.search(r'id="confirm-language">日本語<', confirm)
    with inst.session() as s:
        assert s.execute(select(Notice).where(Notice.channel != "victim")).first() is None   # nothing sent yet
    r = client.post(f"/takedowns/{td}/send", data={"route": "host", "lang": "ja", "csrf_token": token,
                                                   "address": "abuse@hosting.example", "confirm": "1"})
    assert r.status_code == 302
    r = client.post(f"/takedowns/{td}/send", data={"route": "host", "lang": "ja", "csrf_token": token,
                                                   "confirm": "1"})
    with inst.session() as s:
        notices = s.execute(select(Notice).where(Notice.channel != "victim")).scalars().all()
        assert len(notices) == 1                                       # the second click made no second notice
        notices[0].created_at = now - timedelta(minutes=5)
        nid, message_id = notices[0].id, notices[0].message_id
    import redis as redis_lib
    redis_lib.Redis.from_url(redis_url).flushdb()
    context.set_instance(inst)
    assert notify.sweep("") == 1

    env = worker_env(inst, redis_url, smtp)
    ran = kesu_cli("worker", "--queues", "default", "--burst", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    with smtp.cond:
        smtp.cond.wait_for(lambda: len(smtp.messages) >= 2, timeout=20)
    assert len(smtp.messages) == 2, ran.stderr[-3000:]
    by_rcpt = {tuple(rcpt): parse(raw) for _, rcpt, raw in smtp.messages}
    notice_msg = by_rcpt[("abuse@hosting.example",)]
    assert notice_msg["Message-ID"] == message_id
    body = notice_msg.get_content()
    assert page_url in body and media_url in body and "2日" in body and "第4条" in body
    assert "victim@example.net" not in body
    # The victim hears back: no URL, no site, no content.
    victim_msg = by_rcpt[("victim@example.net",)]
    vbody = victim_msg.get_content()
    assert "削除の依頼を1件送りました" in vbody
    assert "http" not in vbody and "tube.example" not in vbody and "127.0.0.1" not in vbody
    assert "tube" not in victim_msg["Subject"] and victim_msg["Message-ID"].startswith("<kesu.victim.")
    # her mail has its own neutral sender; the notices' address never appears in it
    assert victim_msg["From"] == "Info <info@example.org>" and notice_msg["From"] == "notices@example.org"
    assert "notices@" not in victim_msg.as_string() and "help@" not in str(victim_msg.get("Reply-To", ""))
    assert {tuple(r): f for f, r, _ in smtp.messages}[("victim@example.net",)] == "info@example.org"

    with inst.session() as s:
        n = s.get(Notice, nid)
        assert n.state == "sent" and n.sent_at is not None
        t = s.get(Takedown, td)
        assert t.status == "requested" and t.route == "host" and t.requested_at is not None
        assert timedelta(days=1, hours=23) < t.deadline_at - t.requested_at <= timedelta(days=2)
        assert t.media and t.media[0]["url"] == media_url
        victim_row = s.execute(select(Notice).where(Notice.channel == "victim")).scalar_one()
        assert victim_row.recipient == ""                               # her address is never stored
        sched = s.execute(select(Schedule).where(Schedule.kind == "recheck", Schedule.ref == str(td))).scalar_one()
        assert sched.due_at > utcnow()

    # Sent once only: a duplicated job, a retried delivery and the sweep do nothing more.
    assert notify.deliver(inst, nid) == "sent"
    assert notify.enqueue(inst, nid)
    assert notify.sweep("") == 0
    ran = kesu_cli("worker", "--queues", "default", "--burst", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert len(smtp.messages) == 2

    # The page and its image are taken down (the page alone is not: test_removed_only_when_every_url...).
    # The scheduled re-check survives a Redis flush (the row is in the DB).
    site.pages["/v/1"] = (404, b"gone")
    site.pages["/m/1.jpg"] = (404, b"gone")
    with inst.session() as s:
        s.execute(select(Schedule).where(Schedule.kind == "recheck")).scalar_one().due_at = utcnow() - timedelta(seconds=1)
    assert schedule.run_due(inst) == 1
    redis_lib.Redis.from_url(redis_url).flushdb()                      # the enqueued job is lost ...
    with inst.session() as s:
        row = s.execute(select(Schedule).where(Schedule.kind == "recheck")).scalar_one()
        assert row.due_at > utcnow()                                   # ... but the row is still there
        row.due_at = utcnow() - timedelta(seconds=1)                   # (its interval has passed)
    assert schedule.run_due(inst) == 1
    ran = kesu_cli("worker", "--queues", "default", "--burst", env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]

    with inst.session() as s:
        t = s.get(Takedown, td)
        assert t.status == "removed" and t.resolved_at is not None
        kinds = {(r.kind, r.ref) for r in s.execute(select(Schedule)).scalars()}
        assert ("reupload", str(td)) in kinds and ("recheck", str(td)) not in kinds
        checks = s.execute(select(TakedownEvent).where(TakedownEvent.takedown_id == td,
                                                       TakedownEvent.kind == "check")).scalars().all()
        assert [c.detail["outcome"] for c in checks] == ["removed"] and checks[0].detail["http"] == 404
        prediction = s.get(Domain, dom).prediction
    # The domain's prediction now counts this removal (4 ignored + 1 removed, through any route).
    assert prediction["levels"]["domain"]["trials"] == 5 and prediction["levels"]["domain"]["successes"] == 1
    assert prediction["km_level"] in ("all", "domain", "hosting", "country", "kind")

    # Statistics: per year, by category, by domain, and the CSV download.
    from backoffice import stats
    with inst.session() as s:
        data = stats.compute(s, now.year)
    year = [y for y in data["years"] if y["year"] == now.year][0]
    assert year["requests"] == 5 and year["removed"] == 1 and year["still_up"] == 4
    assert year["percent"]["removed"] == 20.0 and year["percent"]["still_up"] == 80.0
    assert data["by_category"][0]["category"] == "adult_ncii"
    assert data["by_domain"][0]["domain"] == "tube.example" and data["by_domain"][0]["removed"] == 1
    r = client.get(f"/stats/stats.csv?year={now.year}")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    text = r.get_data(as_text=True).lstrip("\ufeff")
    assert f"year,{now.year},5,1,20.0,0,0.0,4,80.0,0,0.0,0,0.0,0,0.0" in text
    assert "domain " + str(now.year) + ",tube.example,5,1,20.0" in text
    page = client.get("/stats/?lang=ja").get_data(as_text=True)
    assert "統計" in page or "Statistics" in page
    assert "chart.umd.min.js" in page and "js/stats.js" in page and "<script>" not in page
    js = client.get(f"/stats/data.json?year={now.year}").get_json()
    assert js["years"][-1]["removed"] == 1

    # Item page shows the history, and the re-upload watch re-opens it when the media is back.
    page = client.get(f"/takedowns/{td}?lang=en").get_data(as_text=True)
    assert "Removed" in page and "staff@example.org (staff)" in page and "staff:1" not in page
    site.pages["/v/1"] = (200, b'<html><img src="/m/1.jpg"></html>')
    site.pages["/m/1.jpg"] = (200, media_body)
    seen = []
    recheck.on_reupload(lambda i, t, confirmed: seen.append((t, confirmed)))
    try:
        result = recheck.run_watch(inst, td)
    finally:
        recheck.REUPLOAD_HOOKS.pop()
    assert result["confirmed"] and seen == [(td, True)]
    with inst.session() as s:
        assert s.get(Takedown, td).status == "still_up"
        assert s.execute(select(Schedule).where(Schedule.kind == "recheck", Schedule.ref == str(td))).scalar_one()


def test_recheck_outcomes_and_the_next_route(tmp_path, site, monkeypatch):
    """Media gone or changed = removed; some gone = partly removed; past the deadline: next route."""
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", **ORG)
    a, b = b"first generated media", b"second generated media"
    site.pages.update({"/p": (200, b"<html>page</html>"), "/a.jpg": (200, a), "/b.jpg": (200, b)})
    media = [{"url": site.url + "/a.jpg", "key": recheck.media_key(inst.pepper, a)},
             {"url": site.url + "/b.jpg", "key": recheck.media_key(inst.pepper, b)}]
    fetch = recheck.http_fetcher(allow_private=True)
    assert recheck.check(site.url + "/p", media, inst.pepper, fetch)["outcome"] == "still_up"
    site.pages["/a.jpg"] = (410, b"")
    assert recheck.check(site.url + "/p", media, inst.pepper, fetch)["outcome"] == "partly_removed"
    site.pages["/b.jpg"] = (200, b"a different picture now")
    assert recheck.check(site.url + "/p", media, inst.pepper, fetch)["outcome"] == "removed"
    # a network error proves nothing
    assert recheck.check("http://127.0.0.1:9/p", media, inst.pepper, fetch)["outcome"] == "unknown"
    # private addresses are refused unless allowed
    assert recheck.check(site.url + "/p", [], inst.pepper, recheck.http_fetcher())["outcome"] == "unknown"
    # a file bigger than a re-check reads (a long video) is not "changed": unknown, never removed
    site.pages["/b.jpg"] = (200, b)
    with monkeypatch.context() as small:
        small.setattr(recheck, "MAX_BYTES", 8)
        assert recheck.check(site.url + "/p", media[1:], inst.pepper, fetch)["outcome"] == "unknown"

    # Past the deadline and still up: the next route is proposed (site -> host), once.
    dom = make_domain(inst, "tube.example", contacts={"host": {"email": "abuse@hosting.example"}})
    site.pages.update({"/a.jpg": (200, a), "/b.jpg": (200, b)})
    td = make_takedown(inst, make_case(inst, category="voyeur"), dom, site.url + "/p", media=media, route="site",
                       status="requested", requested_at=utcnow() - timedelta(days=3),
                       deadline_at=utcnow() - timedelta(days=1))
    assert recheck.run_check(inst, td, fetch=fetch)["outcome"] == "still_up"
    recheck.run_check(inst, td, fetch=fetch)
    with inst.session() as s:
        t = s.get(Takedown, td)
        assert t.status == "still_up" and t.proposal == "host"
        proposals = s.execute(select(TakedownEvent).where(TakedownEvent.kind == "proposal")).scalars().all()
        assert len(proposals) == 1 and proposals[0].detail == {"route": "host", "after": "site"}
        t.status = "on_hold"                      # staff hold it
    # a check while on hold records what it saw and leaves the hold alone, even when it is gone
    site.pages.update({"/p": (404, b""), "/a.jpg": (404, b""), "/b.jpg": (404, b"")})
    assert recheck.run_check(inst, td, fetch=fetch)["outcome"] == "removed"
    with inst.session() as s:
        assert s.get(Takedown, td).status == "on_hold"


def test_removed_only_when_every_url_of_the_item_is_gone(tmp_path, site):
    """The page answers 404 while the image file it showed is still served: still up (the
    statistics and the evidence would otherwise say "removed"). Both gone: removed. An unknown
    outcome says why. Re-checks leave through `crawl_proxy`."""
    from forward_proxy import ForwardProxy
    proxy = ForwardProxy("127.0.0.91")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", **ORG,
                         crawl_proxy=f"http://127.0.0.91:{proxy.server_address[1]}")
    img = b"generated matched media"
    media = [{"url": site.url + "/img/1.jpg", "key": recheck.media_key(inst.pepper, img)}]
    site.pages.update({"/v/1": (404, b"gone"), "/img/1.jpg": (200, img)})
    dom = make_domain(inst, "tube.example")
    td = make_takedown(inst, make_case(inst), dom, site.url + "/v/1", media=media, route="site", status="requested")
    try:
        first = recheck.run_check(inst, td)
        assert first["outcome"] == "still_up" and first["status"] == "requested"
        assert "page answers 404" in first["why"] and "still served" in first["why"]
        assert {site.url + "/v/1", site.url + "/img/1.jpg"} <= set(proxy.seen)      # through the proxy
        site.pages["/img/1.jpg"] = (404, b"")
        assert recheck.run_check(inst, td)["outcome"] == "removed"
        with inst.session() as s:
            assert s.get(Takedown, td).status == "removed"
        # the image answering an error: unknown, with the reason
        site.pages["/img/1.jpg"] = (503, b"")
        got = recheck.check(site.url + "/v/1", media, inst.pepper, recheck.http_fetcher(allow_private=True))
        assert got["outcome"] == "unknown" and "media answers 503" in got["why"]
        # no known media: the page decides, and a refused fetch says why
        got = recheck.check("http://127.0.0.1:9/p", [], inst.pepper, recheck.http_fetcher(allow_private=True))
        assert got["outcome"] == "unknown" and got["why"].startswith("page: no answer")
    finally:
        proxy.shutdown()


def test_form_routes_are_marked_sent_and_smtp_failures_are_safe(tmp_path, smtp):
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}",
                         smtp_host="127.0.0.1", smtp_port=smtp.port,
                         smtp_ca_file=smtp.ca_file, **ORG)
    dom = make_domain(inst, "forms.example", contact_email="", contact_form="https://forms.example/contact")
    case = make_case(inst, category="deepfake", language="en", contact="")
    td = make_takedown(inst, case, dom, "https://forms.example/x")
    client = staff_client(inst)
    page = client.get(f"/takedowns/{td}?lang=en&route=search_engine").get_data(as_text=True)
    assert "support.google.com" in page and 'id="notice-text"' in page and "readonly" in page
    token = csrf(client, f"/takedowns/{td}")
    client.post(f"/takedowns/{td}/send", data={"route": "site", "lang": "en", "csrf_token": token, "confirm": "1"})
    with inst.session() as s:
        n = s.execute(select(Notice)).scalar_one()
        assert n.channel == "form" and n.state == "form_ready"
    page = client.get(f"/takedowns/{td}").get_data(as_text=True)
    assert "Mark as sent" in page
    client.post(f"/takedowns/{td}/notices/{n.id}/sent", data={"csrf_token": token})
    with inst.session() as s:
        assert s.get(Notice, n.id).state == "form"
        t = s.get(Takedown, td)
        assert t.status == "requested" and t.route == "site"
        assert timedelta(days=6) < t.deadline_at - t.requested_at <= timedelta(days=7)   # deepfake: 7 days
        assert s.execute(select(Schedule).where(Schedule.kind == "recheck")).scalar_one()
        # she left no contact: no confirmation is queued
        assert s.execute(select(Notice).where(Notice.channel == "victim")).first() is None
    assert smtp.messages == []

    # SMTP down before DATA: nothing was sent, so the notice goes back to "ready" (retried later).
    nid = notify.prepare(inst, td, "host", "en", address="abuse@hosting.example")
    inst.settings.smtp_port = _free_port()
    with pytest.raises(RuntimeError):
        notify.deliver(inst, nid)
    with inst.session() as s:
        assert s.get(Notice, nid).state == "ready"
    inst.settings.smtp_port = smtp.port
    assert notify.deliver(inst, nid) == "sent"
    assert notify.deliver(inst, nid) == "sent"
    assert len(smtp.messages) == 1 and smtp.messages[0][1] == ["abuse@hosting.example"]


@pytest.mark.browser
def test_stats_page_draws_its_charts_in_chromium(tmp_path, chromium):
    """Chart.js and stats.js run under the back office's CSP (no inline script) and draw the numbers."""
    from conftest import serve_app, wait_for
    from selenium.webdriver.common.by import By

    from backoffice import accounts, create_app
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", **ORG)
    dom = make_domain(inst, "tube.example")
    case = make_case(inst)
    for i, status in enumerate(["removed", "removed", "still_up", "requested"]):
        make_takedown(inst, case, dom, f"https://tube.example/{i}", status=status)
    secret = accounts.add(inst, "staff@example.org", "correct horse battery staple", "staff")
    app = create_app(inst)
    url, stop = serve_app(app)
    try:
        chromium.delete_all_cookies()
        chromium.get(url + "/login?lang=ja")
        chromium.find_element(By.ID, "email").send_keys("staff@example.org")
        chromium.find_element(By.ID, "password").send_keys("correct horse battery staple")
        chromium.find_element(By.ID, "code").send_keys(pyotp.TOTP(secret).now())
        chromium.find_element(By.ID, "login").click()
        wait_for(chromium, "!!document.getElementById('welcome')")     # the overview, after login
        chromium.get(url + "/stats/?lang=ja")
        wait_for(chromium, "document.body.dataset.chartsReady === '1'", timeout=30)
        assert chromium.find_element(By.TAG_NAME, "h1").text == "統計"
        data = chromium.execute_script(
            "return window.kesuCharts[0].data.datasets.map(d => [d.label, d.data]);")
        assert ["削除済み", [2]] in data and ["掲載継続", [1]] in data and ["依頼済み（回答待ち）", [1]] in data
        # one year of data: one slim bar in a figure of fixed height, not a wall 300 px tall
        height = chromium.execute_script("return document.getElementById('chart-years').getBoundingClientRect().height")
        assert 150 <= height <= 330, height
        assert chromium.execute_script("return window.kesuCharts[0].data.datasets[0].maxBarThickness") == 48
        assert chromium.find_element(By.ID, "chart-years").get_attribute("aria-label")
        rows = chromium.find_elements(By.CSS_SELECTOR, "#years-table tbody tr")
        assert "50.0 %" in rows[0].text
    finally:
        stop()


def test_a_connection_lost_during_data_is_never_resent(tmp_path):
    """The server took the message but the line dropped before its answer: "uncertain", not retried."""
    import socketserver
    received = []

    class Drop(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(b"220 test ESMTP\r\n")
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"HELO"):
                    self.wfile.write(b"250 test\r\n")
                elif cmd in (b"MAIL", b"RCPT"):
                    self.wfile.write(b"250 OK\r\n")
                elif cmd == b"DATA":
                    self.wfile.write(b"354 go ahead\r\n")
                    body = b""
                    while not body.endswith(b"\r\n.\r\n"):
                        chunk = self.rfile.readline()
                        if not chunk:
                            break
                        body += chunk
                    received.append(body)
                    return                           # hang up without "250"
                else:
                    self.wfile.write(b"250 OK\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Drop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}",
                             smtp_host="127.0.0.1", smtp_port=server.server_address[1], **ORG,
                             smtp_security="none")          # this raw test server speaks no TLS
        td = make_takedown(inst, make_case(inst), make_domain(inst), "https://example.com/u")
        nid = notify.prepare(inst, td, "site", "ja")
        assert notify.deliver(inst, nid) == "uncertain"
        assert notify.deliver(inst, nid) == "uncertain"          # a retried job does not send again
        context.set_instance(inst)
        assert notify.sweep("") == 0
        assert len(received) == 1
        with inst.session() as s:
            assert s.get(Takedown, td).status == "ongoing"       # not counted as requested until staff confirm
            assert s.execute(select(TakedownEvent).where(TakedownEvent.kind == "send_uncertain")).scalar_one()
    finally:
        server.shutdown()


def test_pages_render_for_every_route_and_language(tmp_path):
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", **ORG)
    client = staff_client(inst)
    dom = make_domain(inst, "tube.example")
    adult = make_takedown(inst, make_case(inst), dom, "https://tube.example/a")
    minor = make_takedown(inst, make_case(inst, category="minor"), None, "https://unknown.example/m")
    for td in (adult, minor):
        for route in predict.ROUTES:
            for lang in ("ja", "en"):
                r = client.get(f"/takedowns/{td}?route={route}&lang={lang}")
                assert r.status_code == 200, (td, route, lang)
    page = client.get(f"/takedowns/{minor}?lang=ja&route=site").get_data(as_text=True)
    assert "ホットライン" in page and "tube" not in page and 'name="route" value="hotline"' in page
    page = client.get(f"/takedowns/{adult}?lang=ja&route=lawyer").get_data(as_text=True)
    assert 'id="send-form"' not in page                          # a lawyer gets the evidence export, not a notice
    nid = notify.prepare(inst, adult, "site", "en")
    page = client.get(f"/takedowns/{adult}/notices/{nid}").get_data(as_text=True)
    assert "https://tube.example/a" in page
    for path in ("/takedowns/", "/takedowns/?status=removed", f"/domains/{dom}", "/domains/", "/stats/"):
        r = client.get(path + ("&" if "?" in path else "?") + "lang=ja")
        assert r.status_code == 200, path
    assert client.get("/takedowns/999").status_code == 404
    # without a session: the login page
    anon = client.application.test_client()
    assert anon.get(f"/takedowns/{adult}").status_code == 302
    assert anon.get("/stats/stats.csv").status_code == 302


def test_yearly_counts_survive_a_withdrawal(tmp_path):
    from backoffice import stats
    from store import cases
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", **ORG)
    dom = make_domain(inst, "tube.example")
    keep, gone = make_case(inst), make_case(inst, category="voyeur")
    make_takedown(inst, keep, dom, "https://tube.example/1", status="removed")
    make_takedown(inst, gone, dom, "https://tube.example/2", status="removed")
    make_takedown(inst, gone, dom, "https://tube.example/3", status="still_up")
    with inst.session() as s:
        before = stats.compute(s)
    cases.withdraw(inst, gone)                            # keeps the counts through store.tally
    with inst.session() as s:
        assert s.execute(select(Takedown).where(Takedown.case_id == gone)).first() is None
        after = stats.compute(s)
    assert after["years"] == before["years"]
    assert after["by_category"] == before["by_category"] and after["by_domain"] == before["by_domain"]
    assert {r["category"]: r["requests"] for r in after["by_category"]} == {"voyeur": 2, "adult_ncii": 1}
