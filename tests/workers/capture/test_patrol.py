"""The patrol, end to end: 50 generated sites on 50 loopback addresses, one real Chromium, the real
matcher with a case registered the way an intake submission is (sealed, taken in), real
SQLite. Costs are measured by the sites themselves (responses and bytes they sent).

Nothing under test is stood in for: the sites are plain HTTP servers with generated pages and
images (coloured rectangles), and the only waits are the patrol's own budgets."""
import threading
import time
from datetime import datetime, timedelta

import patrol_sites
import pytest
from conftest import make_instance
from forward_proxy import ForwardProxy
from pipeline import register
from sqlalchemy import select

from store.models import Capture, CaptureKey, Domain, Match, Media, PatrolPage, PatrolRun, Takedown, utcnow
from workers.capture import patrol as P
from workers.jobs import rq_form

pytestmark = pytest.mark.browser

BUDGET = 4.0            # seconds per site and run
# Listing pages only (their counts are what these tests measure); detail pages have their own test.
FAST = dict(crawl_delay=0.05, crawl_idle_seconds=0.1, crawl_page_seconds=10, crawl_faces=0, patrol_detail_pages=0)
GATES = {5: "age", 12: "age", 15: "custom", 20: "cookie", 25: "age", 35: "custom", 45: "age"}
HANG = 3
CASE_SEED = 4242


def _import_domains(inst, sites):
    """The domain CSV with the patrol columns (seeds, frequency, budgets, gate selector, cookie)."""
    from backoffice.domains import import_csv
    lines = ["domain,site name,patrol seeds,patrol every,patrol pages,patrol bytes,patrol pages day,"
             "patrol gate,patrol cookie"]
    for site in sites:
        gate = "#go-in" if site.gate == "custom" else ""
        cookie = "adult=yes" if site.gate == "cookie" else ""
        lines.append(f"{site.domain},Site {site.index},{site.base}/new,1d,10,8MB,100,{gate},{cookie}")
    report = import_csv(inst, ("\n".join(lines) + "\n").encode("utf-8"))
    assert report.inserted == len(sites.sites) and not report.bad, report.bad
    with inst.session() as s:
        return {d.domain: d.id for d in s.execute(select(Domain)).scalars()}


def _matches(inst, case_id):
    """{(site host, media URL, kind)} of the Match rows of a case."""
    with inst.session() as s:
        rows = s.execute(select(Media.url, Match.kind).join(Match, Match.media_id == Media.id)
                         .where(Match.case_id == case_id)).all()
    return {(url.split("/")[2].split(":")[0], url, kind) for url, kind in rows}


def _delta(after, before):
    return {k: after[k] - before[k] for k in after}


@pytest.fixture
def browser():
    from store.config import load
    from workers.capture.crawl import start_browser
    driver = start_browser(load("/nonexistent-instance"))
    yield driver
    driver.quit()


def test_patrol_fifty_sites(tmp_path, browser, monkeypatch):
    monkeypatch.setenv("KESU_PATROL_SECONDS", str(BUDGET))
    inst = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}", **FAST)
    from workers.matching import matcher as match
    match.reset()
    case_image = patrol_sites.make_image(CASE_SEED)
    case_id = register(inst, case_image)[0]

    sites = patrol_sites.build(50, gates=GATES, hang=(HANG,), no_validators=(1, 2, 4))
    try:
        # planted re-uploads: on a listing's second page, behind an age gate, and re-encoded (JPEG)
        sites[7].uploads.insert(2, ("re-7.png", case_image, "image/png"))
        sites[12].uploads.insert(0, ("re-12.png", case_image, "image/png"))
        jpeg = patrol_sites.make_image(CASE_SEED, kind="JPEG")
        sites[31].uploads.insert(1, ("re-31.jpg", jpeg, "image/jpeg"))
        ids = _import_domains(inst, sites)
        with inst.session() as s:         # the site that hangs is due first: it must not hold up the rest
            s.get(Domain, ids[sites[HANG].domain]).next_patrol_at = datetime(1999, 1, 1)

        # --- first patrol ---------------------------------------------------------------------
        t0 = utcnow()
        started = time.monotonic()
        first = P.patrol(inst, driver=browser, now=t0)
        first_s = time.monotonic() - started
        cost1 = sites.counts()
        by_host = {r["domain"]: r for r in first}
        assert len(first) == 50 and first[0]["domain"] == ids[sites[HANG].domain]
        hang = by_host[ids[sites[HANG].domain]]
        assert hang["status"] == "timeout" and hang["seconds"] <= BUDGET + 1.0, hang
        for site in sites:
            if site.index == HANG:
                continue
            r = by_host[ids[site.domain]]
            assert r["status"] == "ok" and r["errors"] == 0, (site.index, r["status"], r["detail"])
            n_pages = -(-len(site.uploads) // patrol_sites.PER_PAGE)
            assert r["pages"] == n_pages, (site.index, r["pages"])          # every listing page, via rel=next
            assert r["media"] == len(site.uploads), (site.index, r["media"])
            if site.gate in ("age", "custom"):
                assert r["detail"]["gates"], site.index                    # the gate was passed
        # one slow site costs its own budget, not the others': everything but it ran at full speed
        others = sum(r["seconds"] for r in first if r["domain"] != hang["domain"])
        assert first_s <= others + hang["seconds"] + 10, (first_s, others)

        found = _matches(inst, case_id)
        hosts = {h for h, _, _ in found}
        assert hosts == {sites[7].host, sites[12].host, sites[31].host}, found
        assert (sites[7].host, sites[7].image_url("re-7.png"), "sha256") in found       # page 2 of the listing
        assert (sites[12].host, sites[12].image_url("re-12.png"), "sha256") in found    # behind the age gate
        assert {k for h, _, k in found if h == sites[31].host} == {"pdq"}               # re-encoded
        with inst.session() as s:
            assert all(m.state == "new" for m in s.execute(select(Match)).scalars())  # the review queue's
            # matched pages hold their evidence; the rest hold none (DESIGN §3)
            for c in s.execute(select(Capture)).scalars():
                matched = any(m.id for m in c.media
                              if s.execute(select(Match).where(Match.media_id == m.id)).first())
                # its data key sealed to the matched case only, never to the org key (DESIGN §3)
                keyed = s.execute(select(CaptureKey).where(CaptureKey.capture_id == c.id)).first() is not None
                assert keyed == matched and c.data_key is None, c.url
            robots = s.get(Domain, ids[sites[49].domain]).patrol_robots
            assert robots["status"] == 200 and "Disallow: /" in robots["text"]
        assert by_host[ids[sites[49].domain]]["detail"]["robots_disallowed"]            # recorded, not obeyed
        assert by_host[ids[sites[49].domain]]["pages"] == 2

        # weights: domains with matches come back sooner than the others
        due_soon = {r["domain_id"] for r in P.due(inst, t0 + timedelta(hours=13))}
        assert due_soon == {ids[sites[i].domain] for i in (7, 12, 31)}, due_soon
        assert not P.due(inst, t0 + timedelta(hours=7))

        # --- second patrol: nothing changed --------------------------------------------------------
        second = P.patrol(inst, driver=browser, now=t0 + timedelta(days=2))
        cost2 = _delta(sites.counts(), cost1)
        assert len(second) == 50
        assert sum(r["pages"] for r in second if r["domain"] != hang["domain"]) == 0, \
            [r for r in second if r["pages"]]
        assert sum(r["unchanged"] for r in second) == 49
        assert cost2["pages"] < 0.2 * cost1["pages"], (cost2, cost1)
        assert cost2["bytes"] < 0.2 * cost1["bytes"], (cost2, cost1)
        assert cost2["images"] == 0
        ours1 = sum(r["bytes"] for r in first)
        ours2 = sum(r["bytes"] for r in second)
        assert ours2 < 0.2 * ours1 and sum(r["fetched"] for r in second) < 0.2 * sum(r["fetched"] for r in first)
        print(f"\npatrol cost, measured by the sites: first {cost1}, second {cost2}; "
              f"patrol's own count: {ours1} -> {ours2} bytes; first patrol {first_s:.1f} s")
        assert {r["status"] for r in second if r["domain"] != hang["domain"]} == {"ok"}

        # --- a new upload on one site is found by the next run, fetching only what is new ---------------
        site = sites[42]
        images_before = site.count.images
        site.upload("new-42.png", case_image)
        third = P.patrol(inst, driver=browser, now=t0 + timedelta(days=4))
        run42 = next(r for r in third if r["domain"] == ids[site.domain])
        assert run42["matches"] >= 1 and run42["pages"] >= 1
        assert (site.host, site.image_url("new-42.png"), "sha256") in _matches(inst, case_id)
        assert site.count.images - images_before == 1          # old uploads: already seen, not fetched again
        assert run42["skipped_media"] >= 1
        assert sum(r["pages"] for r in third if r["domain"] not in (run42["domain"], hang["domain"])) == 0
        with inst.session() as s:
            assert s.execute(select(PatrolRun).where(PatrolRun.status == "running")).first() is None
            assert len(s.execute(select(PatrolPage)).all()) >= 98

        # the overview the patrol page shows
        view = P.overview(inst)
        assert view["domains"] == 50 and view["patrolled_24h"] == 50
        assert any(r["status"] == "timeout" and r["domain"] == sites[HANG].domain for r in view["table"])
    finally:
        sites.stop()
        match.reset()


def test_fill_puts_due_domains_on_the_crawl_queue_by_weight(tmp_path, redis_url):
    """The scheduler: due domains first, weighted by earlier matches and reported URLs, a lease
    so no host is queued twice, and never more than the queue depth."""
    import redis
    from rq import Queue
    inst = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}", redis_url=redis_url,
                         patrol_queue_depth=3)
    now = utcnow()
    from store.models import Case
    with inst.session() as s:
        ds = [Domain(domain=f"d{i}.example", last_patrol_at=now - timedelta(hours=20)) for i in range(5)]
        ds.append(Domain(domain="never.example"))
        ds.append(Domain(domain="off.example", patrol_enabled=False))
        s.add_all(ds)
        s.flush()
        case = Case(number_hash="c" * 64, passphrase_hash="x", category="adult_ncii")
        s.add(case)
        s.flush()
        for i in range(3):                        # three URLs reported on d3: weight 3, due after 8 h
            s.add(Takedown(case_id=case.id, domain_id=ds[3].id, url=f"https://d3.example/{i}"))
        ids = [d.id for d in ds]
    due = P.due(inst, now)
    assert [r["domain_id"] for r in due] == [ids[5], ids[3]]      # never patrolled first, then the weighted one
    assert P.due(inst, now + timedelta(hours=5)) and len(P.due(inst, now + timedelta(hours=5))) == 7 - 1
    queued = P.fill(inst, now + timedelta(hours=5))
    assert queued == [ids[5], ids[3], ids[0]]                     # depth 3
    q = Queue("crawl", connection=redis.Redis.from_url(redis_url))
    assert [(j.func_name, j.args) for j in q.jobs] == [rq_form("patrol", str(i)) for i in queued]
    assert all(j.id.startswith("patrol-") for j in q.jobs)
    assert P.fill(inst, now + timedelta(hours=5)) == []           # queue full
    q.empty()
    again = P.fill(inst, now + timedelta(hours=5))
    assert set(again).isdisjoint(queued) and len(again) == 3      # leased ones are not queued twice


def test_robots_obeyed_when_set_and_traffic_through_the_proxy(tmp_path, monkeypatch):
    """`patrol_robots = obey` skips what robots.txt disallows (and says so); with `crawl_proxy`
    set, the browser's and the probes' requests all go through the proxy."""
    monkeypatch.setenv("KESU_PATROL_ROBOTS", "obey")
    monkeypatch.setenv("KESU_PATROL_SECONDS", "20")
    proxy = ForwardProxy("127.0.0.90")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    sites = patrol_sites.build(2, seed=7000)          # site 1 (the last) disallows everything
    try:
        inst = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}", **FAST,
                             crawl_proxy=f"http://127.0.0.90:{proxy.server_address[1]}")
        with inst.session() as s:
            for site in sites:
                s.add(Domain(domain=site.domain, patrol_seeds=[site.base + "/new"]))
        runs = {r["domain"]: r for r in P.patrol(inst, matcher=lambda i, sig: [])}
        ok, blocked = runs[1], runs[2]
        assert ok["pages"] == 2 and ok["status"] == "ok"
        assert blocked["pages"] == 0 and blocked["blocked"] == 1
        assert blocked["detail"]["blocked"][0]["why"].startswith("robots.txt")
        assert sites[1].count.pages == 0
        carried = set(proxy.seen)
        assert f"{sites[0].base}/robots.txt" in carried and f"{sites[0].base}/new" in carried
        assert f"{sites[0].base}/img/u0-0.png" in carried and f"{sites[0].base}/new?page=2" in carried
        again = P.patrol(inst, now=utcnow() + timedelta(days=2), matcher=lambda i, sig: [])
        assert sum(r["probes"] for r in again) == 1 and sum(r["unchanged"] for r in again) == 1
        assert proxy.seen.count(f"{sites[0].base}/new") == 2          # the capture, then the probe, both proxied
    finally:
        sites.stop()
        proxy.shutdown()


def test_patrol_settings_from_text():
    got = P.clean_patrol({"patrol_seeds": "https://a.example/ https://a.example/new", "patrol_every_s": "6h",
                          "patrol_bytes": "16MB", "patrol_pages": "12", "patrol_cookie": "age=1; lang=ja",
                          "patrol_gate": ""})
    assert got == {"patrol_seeds": ["https://a.example/", "https://a.example/new"], "patrol_every_s": 21600,
                   "patrol_bytes": 16 * 1024 ** 2, "patrol_pages": 12, "patrol_cookie": "age=1; lang=ja",
                   "patrol_gate": None}
    for bad in ({"patrol_seeds": "ftp://x"}, {"patrol_every_s": "10s"}, {"patrol_pages": "-1"},
                {"patrol_cookie": "no pair"}):
        with pytest.raises(ValueError):
            P.clean_patrol(bad)
    a = P.content_hash(b'<p>at 10:00</p><a href="/x">x</a><img src="/i.png">')
    assert a == P.content_hash(b'<p>at 10:05</p><a href="/x">x</a><img src="/i.png">')   # a clock is not news
    assert a != P.content_hash(b'<p>at 10:05</p><a href="/y">y</a><img src="/i.png">')


def test_patrol_page_and_settings_form(tmp_path):
    """The patrol page (summary, per-day and per-domain tables, chart data) and the settings form,
    through real HTTP requests of a logged-in staff member (CSRF on)."""
    import re

    import pyotp

    from backoffice import accounts, create_app
    inst = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}")
    now = utcnow()
    with inst.session() as s:
        d = Domain(domain="slow.example", next_patrol_at=now + timedelta(hours=3))
        s.add(d)
        s.flush()
        s.add(PatrolRun(domain_id=d.id, started_at=now - timedelta(hours=1), finished_at=now, status="timeout",
                        pages=1, bytes=1000, media=2, errors=1, blocked=0,
                        detail={"errors": [{"url": "https://slow.example/", "why": "limit: time"}]}))
        domain_id = d.id
    app = create_app(inst)
    secret = accounts.add(inst, "worker@example.org", "a long enough password", "staff")
    client = app.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login?lang=en").get_data(True)).group(1)
    r = client.post("/login", data={"email": "worker@example.org", "password": "a long enough password",
                                    "code": pyotp.TOTP(secret).now(), "csrf_token": token})
    assert r.status_code == 302
    html = client.get("/patrol/?lang=en").get_data(True)
    assert 'id="patrolled-24h">1 / 1' in html and "slow.example" in html and "limit: time" in html
    assert 'id="chart-patrol-days"' in html and "js/patrol.js" in html and "<script>" not in html
    data = client.get("/patrol/data.json").get_json()
    assert data["days"][0]["pages"] == 1 and data["days"][0]["errors"] == 1 and data["labels"]["pages"]
    assert client.get("/patrol/?lang=ja").status_code == 200
    form = client.get(f"/patrol/domains/{domain_id}?lang=en").get_data(True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form).group(1)
    bad = client.post(f"/patrol/domains/{domain_id}", data={"csrf_token": token, "patrol_every_s": "5s"})
    assert bad.status_code == 400
    ok = client.post(f"/patrol/domains/{domain_id}", data={
        "csrf_token": token, "patrol_seeds": "https://slow.example/\nhttps://slow.example/new",
        "patrol_every_s": "12h", "patrol_pages": "5", "patrol_gate": "#enter", "patrol_enabled": "1",
        "patrol_now": "1"})
    assert ok.status_code == 302
    with inst.session() as s:
        d = s.get(Domain, domain_id)
        assert d.patrol_seeds == ["https://slow.example/", "https://slow.example/new"]
        assert (d.patrol_every_s, d.patrol_pages, d.patrol_gate, d.patrol_enabled) == (43200, 5, "#enter", True)
    assert [r["domain_id"] for r in P.due(inst)] == [domain_id]            # "as soon as possible"


def test_daily_page_budget_stops_a_run(tmp_path):
    """Pages per 24 hours: what earlier runs used counts; the run stops at what is left."""
    sites = patrol_sites.build(1, seed=9000)
    try:
        inst = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}", **FAST)
        with inst.session() as s:
            d = Domain(domain=sites[0].domain, patrol_seeds=[sites[0].base + "/new"], patrol_pages_day=3)
            s.add(d)
            s.flush()
            s.add(PatrolRun(domain_id=d.id, started_at=utcnow() - timedelta(hours=2), pages=2, status="ok", detail={}))
            domain_id = d.id
        r = P.patrol_site(inst, domain_id, matcher=lambda i, sig: [])
        assert (r["pages"], r["status"], r["stopped"]) == (1, "partial", "pages_day")
        assert sites[0].count.pages == 1                  # the listing's second page was not fetched
    finally:
        sites.stop()


def _browsers_of(instance_dir) -> list[str]:
    """Chromium and chromedriver processes started for this instance, wherever they were
    reparented: they inherit KESU_INSTANCE, so their environment names the test's folder."""
    import os
    mark = f"KESU_INSTANCE={instance_dir}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if mark not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/comm") as fh:
                name = fh.read().strip()
        except OSError:
            continue
        if "chrom" in name:
            found.append(f"{pid}:{name}")
    return found


def test_three_patrol_jobs_in_a_forking_worker_leave_no_browser_behind(tmp_path, redis_url):
    """The `patrol` job run three times by a real `kesu worker` (RQ forks a work horse per job):
    each run closes its own Chromium and chromedriver, so none is left once the worker is done."""
    import re

    import redis as redis_lib
    from conftest import TEST_PASSPHRASE, kesu_cli

    from workers import jobs
    url = re.sub(r"/\d+$", "", redis_url) + "/12"
    redis_lib.Redis.from_url(url).flushdb()
    import os
    import subprocess
    import sys

    from workers.system.queue import workers_listening
    # three domains, one patrol job each (one domain asked three times at once is one run: the
    # job's database row lets only one delivery through)
    sites = patrol_sites.build(3, seed=7100)
    folder = tmp_path / "inst"
    keyed = None
    try:
        inst = make_instance(folder, f"sqlite:///{folder / 'kesu.db'}", **FAST, redis_url=url)
        domain_ids = []
        with inst.session() as s:
            for site in sites:
                d = Domain(domain=site.domain, patrol_seeds=[site.base + "/new"])
                s.add(d)
                s.flush()
                domain_ids.append(d.id)
        for domain_id in domain_ids:
            assert jobs.enqueue(inst.settings, "patrol", str(domain_id))
        env = {"KESU_INSTANCE": str(folder), "KESU_DATABASE_URL": inst.settings.database_url, "KESU_REDIS_URL": url,
               "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE, "KESU_CRAWL_ALLOW_PRIVATE": "1", "KESU_CRAWL_FACES": "0",
               "KESU_PATROL_SECONDS": "20", "KESU_CRAWL_DELAY": "0.05", "KESU_CRAWL_IDLE_SECONDS": "0.1",
               "KESU_PATROL_DETAIL_PAGES": "0"}
        # the crawl worker holds no private key: the keyed matcher answers for it
        keyed = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--queues", "match"],
                                 env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not workers_listening(inst.settings, "match"):
            assert keyed.poll() is None and time.monotonic() < deadline, "the matcher did not start"
            time.sleep(0.2)
        ran = kesu_cli("worker", "--queues", "crawl", "--burst", env=env, timeout=300)
        assert ran.returncode == 0, ran.stderr[-2000:]
        with inst.session() as s:
            runs = s.execute(select(PatrolRun).where(PatrolRun.domain_id.in_(domain_ids))).scalars().all()
            assert len(runs) == 3 and all(r.status == "ok" for r in runs), [(r.status, r.detail) for r in runs]
        assert _browsers_of(folder) == []
    finally:
        if keyed is not None:
            keyed.terminate()
            keyed.wait(30)
        sites.stop()
        redis_lib.Redis.from_url(url).flushdb()


def test_patrol_follows_a_listing_to_its_detail_pages_within_the_budget(tmp_path):
    """A changed listing's detail pages (links wrapping a thumbnail) are visited before its next
    page, at most patrol_detail_pages per listing, and the page budget still stops the run."""
    sites = patrol_sites.build(1, uploads=3, seed=7200)
    try:
        inst = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}",
                             **{**FAST, "patrol_detail_pages": 2})
        with inst.session() as s:
            d = Domain(domain=sites[0].domain, patrol_seeds=[sites[0].base + "/new"])
            s.add(d)
            s.flush()
            domain_id = d.id
        run = P.patrol_site(inst, domain_id, matcher=lambda i, sig: [])
        assert run["status"] == "ok" and run["pages"] == 5, run          # 2 listing pages + 2 + 1 details
        with inst.session() as s:
            seen = {p.url for p in s.execute(select(PatrolPage).where(PatrolPage.domain_id == domain_id)).scalars()}
        names = [n for n, _, _ in sites[0].uploads]
        assert {f"{sites[0].base}/item/{n}" for n in names} <= seen
        # the budget holds: three pages, the listing and its first two details, nothing more
        inst.settings.patrol_pages = 3
        with inst.session() as s:
            for page in s.execute(select(PatrolPage)).scalars():
                s.delete(page)
        again = P.patrol_site(inst, domain_id, matcher=lambda i, sig: [], now=utcnow() + timedelta(days=2))
        assert again["pages"] == 3 and again["stopped"] == "pages", again
    finally:
        sites.stop()
