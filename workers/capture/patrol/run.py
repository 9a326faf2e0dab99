"""One run of one domain (`patrol_site`), and every due domain in this process (`patrol`)."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from urllib.parse import urljoin

from sqlalchemy import func, select

from store.models import Capture, CrawlJob, Domain, Media, PatrolPage, PatrolRun, utcnow
from store.urls import site_of
from workers.capture import crawl as cr
from workers.capture import page as cap
from workers.capture.patrol.browser import (
    browser_cookies,
    gate_clicker,
    listing_links,
    set_cookies,
    user_agent,
)
from workers.capture.patrol.config import setting, site_config
from workers.capture.patrol.probe import (
    USER_AGENT_TOKEN,
    content_hash,
    fetch,
    header,
    parser_disallows_all,
    read_robots,
    url_key,
)
from workers.capture.patrol.schedule import due, interval, weights
from workers.net.addresses import url_refusal
from workers.signals.pool import SignalPool, processes_for

log = logging.getLogger("kesu.patrol")

BLOCKING_STATUS = (401, 403, 429, 451)
MAX_DETAIL = 20

# --- one run of one domain --------------------------------------------------------------------

def _seen_media(instance, domain_id: int, limit: int) -> list[str]:
    with instance.session() as s:
        rows = s.execute(select(Media.url).join(Capture, Capture.id == Media.capture_id)
                         .join(PatrolRun, PatrolRun.job_id == Capture.job_id)
                         .where(PatrolRun.domain_id == domain_id, Media.url.like("http%"))
                         .order_by(Media.id.desc()).limit(limit)).scalars().all()
    return list(dict.fromkeys(rows))


def _main_exchange(result) -> cap.Exchange | None:
    docs = [e for e in result.exchanges if e.resource_type == "Document" and e.status is not None
            and e.url == result.final_url]
    return docs[-1] if docs else None


def _pages_last_day(instance, domain_id: int, now: datetime) -> int:
    with instance.session() as s:
        return int(s.execute(select(func.coalesce(func.sum(PatrolRun.pages), 0))
                             .where(PatrolRun.domain_id == domain_id,
                                    PatrolRun.started_at >= now - timedelta(days=1))).scalar() or 0)


def patrol_site(instance, domain_id: int, driver=None, matcher=None, progress=None, now=None,
                pool: SignalPool | None = None) -> dict:
    """Patrol one domain now (within its budgets); returns the run's numbers."""
    settings = instance.settings
    now = now or utcnow()
    matcher = matcher or cr.match_media
    with instance.session() as s:
        d = s.get(Domain, domain_id)
        if d is None:
            raise LookupError(f"no domain {domain_id}")
        cfg = site_config(settings, d)
        name = d.domain
    used_today = _pages_last_day(instance, domain_id, now)
    job_id = cr.create_job(instance, cfg["seeds"][0], depth=0, requested_by="patrol")
    with instance.session() as s:
        run = PatrolRun(domain_id=domain_id, job_id=job_id, started_at=utcnow(), status="running", detail={})
        s.add(run)
        s.flush()
        run_id = run.id
    budget = float(setting(settings, "patrol_seconds"))
    started = time.monotonic()
    st = {"pages": 0, "probes": 0, "unchanged": 0, "fetched": 0, "bytes": 0, "media": 0, "skipped_media": 0,
          "matches": 0, "errors": 0, "blocked": 0}
    detail = {"errors": [], "blocked": [], "robots_disallowed": [], "gates": [], "stopped": None,
              "pages_day_used": used_today}
    pages_left = max(0, min(cfg["pages"], cfg["pages_day"] - used_today))
    bytes_left = cfg["bytes"]
    own = driver is None
    keys = cr.Keys(instance)
    policy = setting(settings, "patrol_robots")

    def note(kind, url, why):
        if len(detail[kind]) < MAX_DETAIL:
            detail[kind].append({"url": url[:500], "why": str(why)[:300]})

    own_pool = pool is None
    if own_pool:
        pool = SignalPool(processes_for(settings.crawl_signal_processes))
    try:
        if own:
            driver = cr.start_browser(settings)
        ua = user_agent(driver)
        set_cookies(driver, cfg["seeds"], cfg["cookie"])
        robots, parser, cost = read_robots(instance, domain_id, cfg, budget, ua)
        st["fetched"] += cost["fetched"]
        st["bytes"] += cost["bytes"]
        if cost["error"]:
            st["errors"] += 1
            note("errors", urljoin(cfg["seeds"][0], "/robots.txt"), cost["error"])
        seen = _seen_media(instance, domain_id, setting(settings, "patrol_seen_media"))
        try:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": seen})
        except Exception:
            seen = []
        seen_set = set(seen)
        roots = {site_of(u) for u in cfg["seeds"]}
        frontier = [(u, "seed") for u in cfg["seeds"]]
        visited: set[str] = set()
        last_visit = 0.0
        while frontier:
            url, kind = frontier.pop(0)
            key = cr.normalise(url)
            if key in visited:
                continue
            visited.add(key)
            remaining = budget - (time.monotonic() - started)
            if remaining <= 0.5:
                detail["stopped"] = "time"
                break
            if pages_left <= 0:
                detail["stopped"] = "pages" if used_today + st["pages"] < cfg["pages_day"] else "pages_day"
                break
            if bytes_left <= 0:
                detail["stopped"] = "bytes"
                break
            reason = url_refusal(url, settings.crawl_allow_private)
            if reason:
                st["blocked"] += 1
                note("blocked", url, reason)
                continue
            if parser is not None and not parser.can_fetch(USER_AGENT_TOKEN, url):
                note("robots_disallowed", url, "robots.txt")
                if policy == "obey":
                    st["blocked"] += 1
                    note("blocked", url, "robots.txt (obeyed)")
                    continue
            with instance.session() as s:
                page = s.execute(select(PatrolPage).where(PatrolPage.domain_id == domain_id,
                                                          PatrolPage.url_key == url_key(url))).scalars().first()
                known = (page.etag, page.last_modified, page.content_hash) if page else (None, None, None)
            # 1. cheap: has it changed since the last run?
            if any(known):
                headers = {"User-Agent": ua, "Accept": "text/html,*/*;q=0.8"}
                if known[0]:
                    headers["If-None-Match"] = known[0]
                if known[1]:
                    headers["If-Modified-Since"] = known[1]
                cookie = browser_cookies(driver, url)
                if cookie:
                    headers["Cookie"] = cookie
                got = fetch(settings, url, headers, timeout=min(15.0, remaining),
                            limit=setting(settings, "patrol_probe_bytes"))
                st["probes"] += 1
                st["bytes"] += got["bytes"]
                bytes_left -= got["bytes"]
                if got["status"] == 200:
                    st["fetched"] += 1
                same = got["status"] == 304 or (got["status"] == 200 and known[2] is not None
                                                 and content_hash(got["body"]) == known[2])
                if same:
                    st["unchanged"] += 1
                    with instance.session() as s:
                        row = s.get(PatrolPage, page.id)
                        row.fetched_at = utcnow()
                        row.etag = header(got["headers"], "etag") or row.etag
                        row.last_modified = header(got["headers"], "last-modified") or row.last_modified
                    if progress:
                        progress({"domain": name, "url": url, "unchanged": True})
                    continue
                if got["status"] is None and got["error"] and "timed out" in got["error"].lower():
                    st["errors"] += 1
                    note("errors", url, got["error"])
                    continue
            # 2. changed or new: load it in the browser, politely
            wait = settings.crawl_delay - (time.monotonic() - last_visit)
            if wait > 0:
                time.sleep(wait)        # politeness towards the site between its pages
            remaining = budget - (time.monotonic() - started)
            limits = cap.Limits.from_settings(settings, remaining, bytes_left)
            try:
                result = cap.capture(url, driver=driver, limits=limits, allow_private=settings.crawl_allow_private,
                                     on_load=gate_clicker(cfg["gate"]), extract=listing_links(cfg["next"]))
            except Exception as exc:
                if own:
                    log.warning("browser failed on a page: %s", type(exc).__name__)
                    result = cap.CaptureResult(url=url, final_url=url, status="error",
                                               error=f"browser failed: {str(exc).splitlines()[0][:200]}")
                    driver = cr.restart_browser(driver, settings)
                else:
                    raise
            last_visit = time.monotonic()
            pages_left -= 1
            st["pages"] += 1
            st["fetched"] += 1
            st["bytes"] += result.bytes_received
            bytes_left -= result.bytes_received
            st["skipped_media"] += sum(1 for e in result.exchanges if e.url in seen_set)
            if result.gate:
                detail["gates"].append(result.gate)
            links = [l for l in result.links if site_of(l) in roots][:cr.MAX_LINKS_KEPT]
            written = cr.write_page(instance, keys, job_id, None, "patrol", result, links, matcher,
                                     settings.crawl_faces, pool)
            st["media"] += len(result.media)
            st["matches"] += written["matches"]
            seen_set.update(m["url"] for m in result.media)
            if result.status == "error":
                st["errors"] += 1
                note("errors", url, result.error)
                if (result.http_status in BLOCKING_STATUS) or (result.error or "").startswith("refused"):
                    st["blocked"] += 1
                    note("blocked", url, result.error)
            elif result.status == "limit" and "time" in result.limits_hit:
                st["errors"] += 1
                note("errors", url, result.error)
                if budget - (time.monotonic() - started) <= 1.0:
                    detail["stopped"] = "time"      # the site's own time budget is spent
                    break
            main = _main_exchange(result)
            with instance.session() as s:
                row = s.execute(select(PatrolPage).where(PatrolPage.domain_id == domain_id,
                                                         PatrolPage.url_key == url_key(url))).scalars().first()
                if row is None:
                    row = PatrolPage(domain_id=domain_id, url_key=url_key(url), url=url)
                    s.add(row)
                new_hash = content_hash(result.html) if result.status == "ok" else None
                if new_hash != row.content_hash:
                    row.changed_at = utcnow()
                ok_page = result.status == "ok" and main is not None
                row.etag = header(main.headers, "etag") if ok_page else None
                row.last_modified = header(main.headers, "last-modified") if ok_page else None
                row.content_hash = new_hash
                row.status = result.http_status
                row.fetched_at = utcnow()
            if progress:
                progress({"domain": name, "url": url, "status": result.status, "media": len(result.media),
                          "matches": written["matches"]})
            nxt = (result.extracted or {}).get("next")
            follow = []
            if result.status == "ok" and kind in ("seed", "next"):
                # a listing that changed: its detail pages first (newest content), then its next page,
                # all within the same page, byte and time budgets
                queued = {cr.normalise(u) for u, _ in frontier}
                for link in (result.extracted or {}).get("details") or []:
                    if len(follow) >= setting(settings, "patrol_detail_pages"):
                        break
                    link = link.split("#", 1)[0] if isinstance(link, str) else ""
                    key = cr.normalise(link) if link.startswith(("http:", "https:")) else None
                    if key and site_of(link) in roots and key not in visited and key not in queued \
                            and link != nxt:
                        queued.add(key)
                        follow.append((link, "detail"))
            if result.status == "ok" and isinstance(nxt, str) and nxt.startswith(("http:", "https:")) \
                    and site_of(nxt) in roots and cr.normalise(nxt) not in visited:
                follow.append((nxt.split("#", 1)[0], "next"))
            frontier[0:0] = follow
        if frontier and detail["stopped"] is None and budget - (time.monotonic() - started) <= 0.5:
            detail["stopped"] = "time"
        status = "ok"
        if detail["stopped"] == "time":
            status = "timeout"
        elif detail["stopped"]:
            status = "partial"
        elif st["errors"] and not st["pages"] and not st["unchanged"]:
            status = "error"
        return _finish(instance, run_id, job_id, domain_id, status, st, detail, robots, started, now)
    except BaseException as exc:
        detail["stopped"] = f"{type(exc).__name__}"
        note("errors", cfg["seeds"][0], f"{type(exc).__name__}: {exc}")
        try:
            _finish(instance, run_id, job_id, domain_id, "error", st, detail, None, started, now)
        except Exception:
            pass
        raise
    finally:
        if own_pool:
            pool.close()
        if driver is not None:
            try:
                driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
            except Exception:
                pass
        if own:
            cr.close_browser(driver)


def _finish(instance, run_id, job_id, domain_id, status, st, detail, robots, started, now) -> dict:
    seconds = round(time.monotonic() - started, 3)
    if robots and robots.get("text") is not None and parser_disallows_all(robots):
        detail["robots_disallow_all"] = True
    weight = weights(instance).get(domain_id, 1.0)
    with instance.session() as s:
        run = s.get(PatrolRun, run_id)
        for k, v in st.items():
            setattr(run, k, v)
        run.status = status
        run.detail = detail
        run.seconds = seconds
        run.finished_at = utcnow()
        job = s.get(CrawlJob, job_id)
        if job is not None:
            job.status = "done" if status != "error" else "error"
            job.stats = {**st, "stopped": detail["stopped"], "seconds": seconds, "patrol_run": run_id}
            job.finished_at = utcnow()
        d = s.get(Domain, domain_id)
        d.last_patrol_at = now
        d.next_patrol_at = now + timedelta(seconds=interval(instance.settings, d, weight))
        d.patrol_lease_until = None
    return {"run": run_id, "job": job_id, "domain": domain_id, "status": status, "seconds": seconds,
            **st, "stopped": detail["stopped"], "detail": detail}


def patrol(instance, driver=None, now=None, limit: int | None = None, matcher=None, progress=None) -> list[dict]:
    """Patrol every due domain now, in this process, one browser for all (tests, `kesu patrol`)."""
    now = now or utcnow()
    own = driver is None
    if own:
        driver = cr.start_browser(instance.settings)
    results = []
    pool = SignalPool(processes_for(instance.settings.crawl_signal_processes))     # one for all domains
    try:
        for row in due(instance, now, limit):
            results.append(patrol_site(instance, row["domain_id"], driver=driver, matcher=matcher,
                                       progress=progress, now=now, pool=pool))
            if own and not cr.driver_alive(driver):
                driver = cr.restart_browser(driver, instance.settings)
    finally:
        pool.close()
        if own:
            cr.close_browser(driver)
    return results


def run_job(ref: str) -> dict:
    """The RQ job: one domain, with a browser of its own that is closed when the run ends (a
    browser kept in a global would outlive the forked work horse that started it)."""
    from workers.system.context import instance
    out = patrol_site(instance(), int(ref))
    return {k: v for k, v in out.items() if k != "detail"}
