"""Patrol: visit every domain of the domain database again and again, cheaply, fairly.

Staff cannot read 17,000 sites and a victim must never search for her own images, so the
patrol does it: each domain has seed URLs (front page, newest uploads, listings), a frequency
and budgets (pages and bytes per run, pages per 24 hours), all NULL-able on the Domain row
(NULL: the instance default below) and importable with the domain CSV (`clean_patrol`).

One run of one domain (`patrol_site`):

1. robots.txt is fetched (at most once per `patrol_robots_ttl`) and its rules recorded on the
   domain; `patrol_robots` = `record` (default) notes the pages it disallows and visits them
   anyway, `obey` skips them (counted as blocked). kesu is not an indexer: it fetches what any
   visitor's browser would, at a polite rate, publishes nothing, and keeps only what DESIGN §3
   allows; an organisation that prefers to obey sets `obey`.
2. Each seed, then each listing's "next" page (rel=next, or the domain's selector), is first
   asked for cheaply when the patrol has seen it before: a conditional GET with its ETag /
   Last-Modified (304: unchanged), or, without validators, a GET whose content hash (the
   page's links and media URLs, so timestamps and tokens don't count) is compared. Only a
   changed page is loaded in Chromium (workers.capture.page), and a listing's next page is only
   followed when the listing changed, so the cost of a run follows what is new.
3. Media URLs this domain's patrols have already fetched are blocked in the browser
   (`Network.setBlockedURLs`): their signals are stored already, and a later case is matched
   against them without fetching them again (workers.matching.matcher.retro_match).
4. Age gates and cookie walls: the domain's selector is clicked, or, without one, a common
   gate (a button that says 18+/enter/agree/はい inside an element named age/gate/verify/
   consent/cookie); the domain's cookie(s) are set in the browser before the first page.
   The probe of step 2 sends the browser's cookies for the page, so a passed gate stays passed.
5. Everything captured goes through the crawler's writer (workers.capture.crawl): signals, the
   matcher hook, Match rows for the review queue, full evidence only for what matched.

A run stops at its budgets: pages, bytes, and `patrol_seconds` of wall time (a site that
hangs costs its own budget, never the others'). Each run is a PatrolRun row (pages,
probes, bytes, media, matches, errors, blocked, what stopped it) and a CrawlJob whose
captures `workers.capture.crawl.report` can print.

Scheduling (`due`, `fill`): each domain is due at `last_patrol_at + every / weight`, where the
weight grows with the matches found on the domain before and the URLs victims and staff
reported there (takedowns, and the known URLs of cases, read in memory only). `fill` (a
scheduled job) puts the due domains on the crawl queue in that order, never more than
`patrol_queue_depth` at once, and leases each domain while its run is queued or running,
so a host is never patrolled by two workers at once. Schedules are the Domain columns.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
import urllib.error
import urllib.request
import urllib.robotparser
from datetime import datetime, timedelta
from urllib.parse import urljoin, urlsplit

from sqlalchemy import func, select

from store.models import Capture, CrawlJob, Domain, Match, Media, PatrolPage, PatrolRun, Takedown, utcnow
from workers.capture import crawl as cr
from workers.capture import page as cap

log = logging.getLogger("kesu.patrol")

# Defaults; each can be set in config.toml or as KESU_<NAME> (environment wins).
USER_AGENT_TOKEN = "kesu"               # the name robots.txt rules are read for
BLOCKING_STATUS = (401, 403, 429, 451)
MAX_DETAIL = 20


def setting(settings, name: str):
    """A patrol setting (store/config.py: KESU_PATROL_* or config.toml)."""
    return getattr(settings, name)


# --- the domain's patrol settings ----------------------------------------------------------

PATROL_FIELDS = ("patrol_seeds", "patrol_every_s", "patrol_pages", "patrol_bytes", "patrol_pages_day",
                 "patrol_next", "patrol_gate", "patrol_cookie")

# CSV header names (backoffice.domains folds case, spaces, underscores and hyphens away).
CSV_ALIASES = {
    "patrolseeds": "patrol_seeds", "seeds": "patrol_seeds", "seedurls": "patrol_seeds", "巡回url": "patrol_seeds",
    "巡回開始url": "patrol_seeds", "シードurl": "patrol_seeds",
    "patrolevery": "patrol_every_s", "patroleverys": "patrol_every_s", "patrolfrequency": "patrol_every_s",
    "patrolhours": "patrol_every_s", "巡回間隔": "patrol_every_s",
    "patrolpages": "patrol_pages", "巡回ページ数": "patrol_pages",
    "patrolbytes": "patrol_bytes", "patrolmb": "patrol_bytes", "巡回バイト数": "patrol_bytes",
    "patrolpagesday": "patrol_pages_day", "patrolpagesperday": "patrol_pages_day", "1日のページ数": "patrol_pages_day",
    "patrolnext": "patrol_next", "nextselector": "patrol_next", "次ページセレクタ": "patrol_next",
    "patrolgate": "patrol_gate", "gateselector": "patrol_gate", "年齢確認セレクタ": "patrol_gate",
    "patrolcookie": "patrol_cookie", "gatecookie": "patrol_cookie", "cookie": "patrol_cookie",
}


def _duration(text: str) -> int:
    """'86400', '24h', '90m', '2d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise ValueError(f"not a duration: {text!r} (seconds, or a number with s, m, h or d)")
    n = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if n < 60:
        raise ValueError("a patrol frequency under a minute is not polite")
    return int(n)


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = (m.group(2) or "b")[0]
    return int(float(m.group(1)) * {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[unit])


def clean_patrol(values: dict) -> dict:
    """Validated patrol columns from text (CSV cells, form fields); only the keys present.
    An empty value means NULL (the instance default). Raises ValueError naming the problem."""
    out = {}
    for key in PATROL_FIELDS:
        if key not in values:
            continue
        text = (values.get(key) or "").strip()
        if not text:
            out[key] = None
            continue
        if key == "patrol_seeds":
            seeds = [u for u in re.split(r"[\s|,]+", text) if u]
            for u in seeds:
                if not re.match(r"^https?://[^\s/]+", u, re.I):
                    raise ValueError(f"a seed must be an http(s) URL: {u!r}")
            if len(seeds) > 20:
                raise ValueError("at most 20 seed URLs")
            out[key] = seeds
        elif key == "patrol_every_s":
            out[key] = _duration(text)
        elif key == "patrol_bytes":
            out[key] = _size(text)
        elif key in ("patrol_pages", "patrol_pages_day"):
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"{key} must be a whole number of pages: {text!r}")
            out[key] = int(text)
        elif key == "patrol_cookie":
            pairs = [p.strip() for p in text.split(";") if p.strip()]
            if not all(re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+=[^;,\s]*", p) for p in pairs):
                raise ValueError(f"cookies must be name=value pairs separated by ';': {text!r}")
            out[key] = "; ".join(pairs)[:500]
        else:
            if len(text) > 200:
                raise ValueError(f"{key} longer than 200 characters")
            out[key] = text
    return out


def site_config(settings, d: Domain) -> dict:
    return {
        "seeds": list(d.patrol_seeds or [f"https://{d.domain}/"]),
        "every_s": d.patrol_every_s or setting(settings, "patrol_every_s"),
        "pages": d.patrol_pages or setting(settings, "patrol_pages"),
        "bytes": d.patrol_bytes or setting(settings, "patrol_bytes"),
        "pages_day": d.patrol_pages_day or setting(settings, "patrol_pages_day"),
        "next": d.patrol_next or "", "gate": d.patrol_gate or "", "cookie": d.patrol_cookie or "",
    }


# --- page fingerprints ---------------------------------------------------------------------

_ATTR = re.compile(rb"""\b(?:src|href|srcset|data-src|data-original|poster)\s*=\s*["']([^"']{1,2000})["']""", re.I)


def content_hash(html: bytes | None) -> str | None:
    """What matters of a listing: the links and media it names (not timestamps or tokens)."""
    if html is None:
        return None
    found = sorted(set(_ATTR.findall(html)))
    return hashlib.sha256(b"\n".join(found) if found else html).hexdigest()


def url_key(url: str) -> str:
    return hashlib.sha256(cr.normalise(url).encode("utf-8")).hexdigest()


def _header(headers: dict, name: str) -> str | None:
    return next((v for k, v in (headers or {}).items() if k.lower() == name), None)


# --- plain requests (robots.txt, conditional probes) ------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None                     # a redirect answers as itself: "changed", the browser follows it


def _opener(settings):
    proxy = settings.crawl_proxy
    handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {}), _NoRedirect()]
    return urllib.request.build_opener(*handlers)


def fetch(settings, url: str, headers: dict, timeout: float, limit: int) -> dict:
    """One GET outside the browser: {"status", "headers", "body", "bytes", "error"}. Never raises."""
    out = {"status": None, "headers": {}, "body": None, "bytes": 0, "error": None}
    ok, reason = cap.url_allowed(url, settings.crawl_allow_private)
    if not ok:
        out["error"] = reason
        return out
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = _opener(settings).open(req, timeout=max(0.5, timeout))
    except urllib.error.HTTPError as exc:
        resp = exc
    except Exception as exc:             # timeouts, refused connections, TLS errors
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return out
    try:
        out["status"] = resp.status if hasattr(resp, "status") else resp.code
        out["headers"] = {k: v for k, v in resp.headers.items()}
        head = 15 + sum(len(k) + len(v) + 4 for k, v in out["headers"].items())
        try:
            body = resp.read(limit + 1)
        except Exception as exc:
            body = b""
            out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        out["body"] = body[:limit]
        out["bytes"] = head + len(body)
    finally:
        try:
            resp.close()
        except Exception:
            pass
    return out


def _browser_cookies(driver, url: str) -> str:
    try:
        got = driver.execute_cdp_cmd("Network.getCookies", {"urls": [url]}).get("cookies", [])
    except Exception:
        return ""
    return "; ".join(f"{c['name']}={c['value']}" for c in got)


def _set_cookies(driver, urls, cookie: str):
    for pair in [p.strip() for p in (cookie or "").split(";") if "=" in p]:
        name, value = pair.split("=", 1)
        for u in {f"{urlsplit(x).scheme}://{urlsplit(x).netloc}/" for x in urls}:
            try:
                driver.execute_cdp_cmd("Network.setCookie", {"name": name, "value": value, "url": u, "path": "/"})
            except Exception:
                pass


def _user_agent(driver) -> str:
    try:
        return driver.execute_cdp_cmd("Browser.getVersion", {}).get("userAgent", "") or "Mozilla/5.0"
    except Exception:
        return "Mozilla/5.0"


# --- in the page: gates and the "next" link ---------------------------------------------------

GATE_JS = r"""
const sel = arguments[0];
const visible = (el) => { const r = el.getBoundingClientRect(); const st = getComputedStyle(el);
  return r.width > 0 && r.height > 0 && st.visibility !== 'hidden' && st.display !== 'none'; };
let target = null, how = null;
if (sel) { try { target = document.querySelector(sel); } catch (e) {} how = 'selector'; }
if (!target) {
  const box = /age|gate|verif|adult|consent|cookie|gdpr|disclaimer|年齢|同意|成人/i;
  const yes = /18|enter|agree|accept|allow|yes|continue|ok\b|はい|入場|入る|同意|了承|承諾|許可|進む|閲覧/i;
  const no = /leave|exit|\bno\b|reject|decline|under|未満|いいえ|退出|拒否/i;
  for (const el of document.querySelectorAll('button, a, input[type=button], input[type=submit], [role=button]')) {
    const text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 80);
    if (!text || no.test(text) || !yes.test(text) || !visible(el)) continue;
    let p = el, inBox = false;
    for (let i = 0; p && p.getAttribute && i < 6; i++, p = p.parentElement) {
      const name = (p.id || '') + ' ' + (typeof p.className === 'string' ? p.className : '') + ' ' + (p.getAttribute('aria-label') || '');
      if (box.test(name)) { inBox = true; break; }
    }
    if (inBox) { target = el; how = 'common'; break; }
  }
}
if (!target) return null;
target.click();
return how + ':' + (target.id ? '#' + target.id : target.tagName.toLowerCase());
"""

NEXT_JS = r"""
const sel = arguments[0];
let el = null;
if (sel) { try { el = document.querySelector(sel); } catch (e) {} }
if (!el) el = document.querySelector('a[rel~="next" i], link[rel~="next" i]');
const href = el ? (el.href || el.getAttribute('href')) : null;
return {next: (typeof href === 'string') ? href : null};
"""


def _on_load(selector: str):
    def run(driver):
        return driver.execute_script(GATE_JS, selector or None)
    return run


def _extract(selector: str):
    def run(driver):
        return driver.execute_script(NEXT_JS, selector or None)
    return run


# --- one run of one domain --------------------------------------------------------------------

_driver = None


def shared_driver(settings):
    """The worker's long-lived browser (restarted when it died)."""
    global _driver
    if _driver is None or not cr.driver_alive(_driver):
        if _driver is not None:
            try:
                _driver.quit()
            except Exception:
                pass
        _driver = cr.start_browser(settings)
    return _driver


def _seen_media(instance, domain_id: int, limit: int) -> list[str]:
    with instance.session() as s:
        rows = s.execute(select(Media.url).join(Capture, Capture.id == Media.capture_id)
                         .join(PatrolRun, PatrolRun.job_id == Capture.job_id)
                         .where(PatrolRun.domain_id == domain_id, Media.url.like("http%"))
                         .order_by(Media.id.desc()).limit(limit)).scalars().all()
    return list(dict.fromkeys(rows))


def _robots(instance, d_id: int, cfg: dict, remaining: float, ua: str) -> tuple[dict, urllib.robotparser.RobotFileParser | None, dict]:
    """The recorded robots.txt of the domain (fetched again when older than the TTL) and a parser."""
    settings = instance.settings
    with instance.session() as s:
        recorded = dict(s.get(Domain, d_id).patrol_robots or {})
    cost = {"fetched": 0, "bytes": 0, "error": None}
    fresh = recorded.get("fetched_at") and (
        utcnow() - datetime.fromisoformat(recorded["fetched_at"])).total_seconds() < setting(settings, "patrol_robots_ttl")
    if not fresh:
        seed = cfg["seeds"][0]
        url = urljoin(seed, "/robots.txt")
        got = fetch(settings, url, {"User-Agent": ua}, timeout=min(10.0, max(0.5, remaining)), limit=512 * 1024)
        cost["bytes"] = got["bytes"]
        cost["fetched"] = 1 if got["body"] is not None else 0
        if got["error"] and got["status"] is None:
            cost["error"] = got["error"]
            return recorded, None, cost
        text = (got["body"] or b"").decode("utf-8", "replace") if got["status"] == 200 else ""
        recorded = {"url": url, "fetched_at": utcnow().isoformat(timespec="seconds"), "status": got["status"],
                    "sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text[:8000]}
        with instance.session() as s:
            s.get(Domain, d_id).patrol_robots = recorded
    parser = urllib.robotparser.RobotFileParser()
    status = recorded.get("status")
    if status in (401, 403):
        parser.disallow_all = True
    else:
        parser.parse((recorded.get("text") or "").splitlines())
    return recorded, parser, cost


def _main_exchange(result) -> cap.Exchange | None:
    docs = [e for e in result.exchanges if e.resource_type == "Document" and e.status is not None
            and e.url == result.final_url]
    return docs[-1] if docs else None


def _pages_last_day(instance, domain_id: int, now: datetime) -> int:
    with instance.session() as s:
        return int(s.execute(select(func.coalesce(func.sum(PatrolRun.pages), 0))
                             .where(PatrolRun.domain_id == domain_id,
                                    PatrolRun.started_at >= now - timedelta(days=1))).scalar() or 0)


def patrol_site(instance, domain_id: int, driver=None, matcher=None, progress=None, now=None) -> dict:
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

    try:
        if own:
            driver = cr.start_browser(settings)
        ua = _user_agent(driver)
        _set_cookies(driver, cfg["seeds"], cfg["cookie"])
        robots, parser, cost = _robots(instance, domain_id, cfg, budget, ua)
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
        roots = {cr.site_of(u) for u in cfg["seeds"]}
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
            ok, reason = cap.url_allowed(url, settings.crawl_allow_private)
            if not ok:
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
                cookie = _browser_cookies(driver, url)
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
                        row.etag = _header(got["headers"], "etag") or row.etag
                        row.last_modified = _header(got["headers"], "last-modified") or row.last_modified
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
                                     on_load=_on_load(cfg["gate"]), extract=_extract(cfg["next"]))
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
            links = [l for l in result.links if cr.site_of(l) in roots][:cr.MAX_LINKS_KEPT]
            written = cr.write_page(instance, keys, job_id, None, "patrol", result, links, matcher,
                                     settings.crawl_faces)
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
                row.etag = _header(main.headers, "etag") if ok_page else None
                row.last_modified = _header(main.headers, "last-modified") if ok_page else None
                row.content_hash = new_hash
                row.status = result.http_status
                row.fetched_at = utcnow()
            if progress:
                progress({"domain": name, "url": url, "status": result.status, "media": len(result.media),
                          "matches": written["matches"]})
            nxt = (result.extracted or {}).get("next")
            if result.status == "ok" and isinstance(nxt, str) and nxt.startswith(("http:", "https:")) \
                    and cr.site_of(nxt) in roots and cr.normalise(nxt) not in visited:
                frontier.insert(0, (nxt.split("#", 1)[0], "next"))
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
        if driver is not None:
            try:
                driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
            except Exception:
                pass
        if own and driver is not None:
            try:
                driver.quit()
            except Exception:
                pass


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


def parser_disallows_all(robots: dict) -> bool:
    p = urllib.robotparser.RobotFileParser()
    p.parse((robots.get("text") or "").splitlines())
    seed = robots.get("url") or "http://x/robots.txt"
    return not p.can_fetch(USER_AGENT_TOKEN, urljoin(seed, "/"))


# --- scheduling --------------------------------------------------------------------------------

_reported_cache: tuple[float, dict] = (0.0, {})


def _reported_hosts(instance) -> dict[str, int]:
    """host -> how many URLs victims reported there (their cases' known URLs, read in memory
    with the case keys; nothing is written). Empty when the keys are locked."""
    global _reported_cache
    if time.monotonic() - _reported_cache[0] < 600 and _reported_cache[0]:
        return _reported_cache[1]
    out: dict[str, int] = {}
    try:
        from store.models import Case
        from workers.cases.takein import case_details
        with instance.session() as s:
            ids = list(s.execute(select(Case.id).where(Case.status != "withdrawn", Case.details.is_not(None)))
                       .scalars())
        for cid in ids:
            details = case_details(instance, cid) or {}
            for u in details.get("known_urls") or []:
                host = cr.site_of(u)
                if host:
                    out[host] = out.get(host, 0) + 1
    except Exception:
        out = {}
    _reported_cache = (time.monotonic(), out)
    return out


def weights(instance) -> dict[int, float]:
    """domain id -> weight >= 1: more for domains where matches were found (confirmed ones count
    double, rejected ones not at all) and where victims or staff reported URLs."""
    with instance.session() as s:
        domains = s.execute(select(Domain.id, Domain.domain, Domain.patrol_seeds)).all()
        matched = s.execute(select(Media.url, Match.state).join(Match, Match.media_id == Media.id)
                            .where(Match.state != "rejected")).all()
        takedowns = dict(s.execute(select(Takedown.domain_id, func.count()).where(Takedown.domain_id.is_not(None))
                                   .group_by(Takedown.domain_id)).all())
    host_to_id: dict[str, int] = {}
    for did, name, seeds in domains:
        host_to_id[name.lower()] = did
        for u in seeds or []:
            host_to_id.setdefault(cr.site_of(u), did)
    found: dict[int, float] = {}
    for url, state in matched:
        did = host_to_id.get(cr.site_of(url))
        if did is not None:
            found[did] = found.get(did, 0) + (2.0 if state == "confirmed" else 1.0)
    reported: dict[int, int] = {did: n for did, n in takedowns.items()}
    for host, n in _reported_hosts(instance).items():
        did = host_to_id.get(host)
        if did is not None:
            reported[did] = reported.get(did, 0) + n
    out = {}
    for did, *_ in domains:
        w = 1.0 + math.log2(1 + found.get(did, 0)) + math.log2(1 + reported.get(did, 0))
        out[did] = min(w, 8.0)
    return out


def interval(settings, d: Domain, weight: float = 1.0) -> int:
    every = d.patrol_every_s or setting(settings, "patrol_every_s")
    return int(max(min(every, setting(settings, "patrol_min_every_s")), every / max(1.0, weight)))


def due(instance, now=None, limit: int | None = None) -> list[dict]:
    """Domains due for a patrol, most due first: [{"domain_id", "due_at", "weight"}]."""
    now = now or utcnow()
    w = weights(instance)
    out = []
    with instance.session() as s:
        rows = s.execute(select(Domain).where((Domain.patrol_enabled.is_(None)) | (Domain.patrol_enabled.is_(True)))
                         ).scalars().all()
        for d in rows:
            if d.patrol_lease_until is not None and d.patrol_lease_until > now:
                continue
            weight = w.get(d.id, 1.0)
            if d.last_patrol_at is None:
                at = d.next_patrol_at or datetime(2000, 1, 1)
            else:
                at = d.last_patrol_at + timedelta(seconds=interval(instance.settings, d, weight))
                if d.next_patrol_at is not None:
                    at = min(at, d.next_patrol_at)
            if at <= now:
                out.append({"domain_id": d.id, "due_at": at, "weight": weight, "domain": d.domain})
    out.sort(key=lambda r: (r["due_at"], -r["weight"], r["domain_id"]))
    return out[:limit] if limit else out


def patrol(instance, driver=None, now=None, limit: int | None = None, matcher=None, progress=None) -> list[dict]:
    """Patrol every due domain now, in this process, one browser for all (tests, `kesu patrol`)."""
    now = now or utcnow()
    own = driver is None
    if own:
        driver = cr.start_browser(instance.settings)
    results = []
    try:
        for row in due(instance, now, limit):
            results.append(patrol_site(instance, row["domain_id"], driver=driver, matcher=matcher,
                                       progress=progress, now=now))
            if own and not cr.driver_alive(driver):
                driver = cr.restart_browser(driver, instance.settings)
    finally:
        if own:
            try:
                driver.quit()
            except Exception:
                pass
    return results


def queue_depth(settings) -> int | None:
    """Jobs waiting on the crawl queue (None when Redis is not reachable)."""
    try:
        from workers.system.queue import connection, queue
        conn = connection(settings)
        conn.ping()
        return queue(settings, "crawl", conn).count
    except Exception:
        return None


def fill(instance, now=None) -> list[int]:
    """Put due domains on the crawl queue (most due first) up to the queue depth; returns their ids."""
    from workers import jobs
    from workers.system.queue import connection, queue, workers_listening
    settings = instance.settings
    now = now or utcnow()
    conn = connection(settings)
    q = queue(settings, "crawl", conn)
    waiting = sum(1 for jid in q.job_ids if jid.startswith("patrol-"))
    depth = setting(settings, "patrol_queue_depth") or max(4, 2 * workers_listening(settings, "crawl"))
    room = depth - waiting
    if room <= 0:
        return []
    lease = timedelta(seconds=setting(settings, "patrol_seconds") * 2 + 3600)
    out = []
    for row in due(instance, now, room):
        with instance.session() as s:
            d = s.get(Domain, row["domain_id"])
            if d.patrol_lease_until is not None and d.patrol_lease_until > now:
                continue
            d.patrol_lease_until = now + lease
        jobs.enqueue(settings, "patrol", str(row["domain_id"]), conn=q.connection,
                     job_id=f"patrol-{row['domain_id']}-{int(now.timestamp())}",
                     job_timeout=int(setting(settings, "patrol_seconds")) + 300)
        out.append(row["domain_id"])
    return out


# --- RQ entry points (arguments are ids) ---------------------------------------------------------

def run_job(ref: str) -> dict:
    from workers.system.context import instance
    inst = instance()
    out = patrol_site(inst, int(ref), driver=shared_driver(inst.settings))
    return {k: v for k, v in out.items() if k != "detail"}


def fill_job(_ref: str = "") -> list[int]:
    from workers.system.context import instance
    return fill(instance())


# --- the overview (the back office's patrol page) --------------------------------------------------

def overview(instance, now=None, days: int = 14, limit: int = 200) -> dict:
    now = now or utcnow()
    with instance.session() as s:
        day = func.date(PatrolRun.started_at)
        per_day = s.execute(select(day, func.sum(PatrolRun.pages), func.sum(PatrolRun.media),
                                   func.sum(PatrolRun.matches), func.sum(PatrolRun.bytes), func.sum(PatrolRun.errors),
                                   func.sum(PatrolRun.blocked), func.count())
                            .where(PatrolRun.started_at >= now - timedelta(days=days))
                            .group_by(day).order_by(day)).all()
        total_domains = int(s.execute(select(func.count()).select_from(Domain)).scalar() or 0)
        latest = (select(PatrolRun.domain_id, func.max(PatrolRun.id).label("rid")).group_by(PatrolRun.domain_id)
                  .subquery())
        rows = s.execute(select(Domain, PatrolRun).join(latest, latest.c.domain_id == Domain.id)
                         .join(PatrolRun, PatrolRun.id == latest.c.rid)
                         .order_by((PatrolRun.errors + PatrolRun.blocked).desc(), PatrolRun.started_at.desc())
                         .limit(limit)).all()
        matches_24h = int(s.execute(select(func.count()).select_from(Match)
                                    .where(Match.created_at >= now - timedelta(days=1))).scalar() or 0)
        due_now = len(due(instance, now))
    table = [{"domain_id": d.id, "domain": d.domain, "last_run": r.started_at.isoformat(timespec="minutes"),
              "status": r.status, "pages": r.pages, "unchanged": r.unchanged, "bytes": r.bytes, "media": r.media,
              "matches": r.matches, "errors": r.errors, "blocked": r.blocked, "seconds": round(r.seconds, 1),
              "next": d.next_patrol_at.isoformat(timespec="minutes") if d.next_patrol_at else "",
              "problems": [e.get("why", "") for e in ((r.detail or {}).get("errors") or [])][:3]
              + [b.get("why", "") for b in ((r.detail or {}).get("blocked") or [])][:3]}
             for d, r in rows]
    return {
        "domains": total_domains,
        "days": [{"day": str(d), "pages": int(p or 0), "media": int(m or 0), "matches": int(x or 0),
                  "bytes": int(b or 0), "errors": int(e or 0), "blocked": int(bl or 0), "runs": int(n or 0)}
                 for d, p, m, x, b, e, bl, n in per_day],
        "matches_24h": matches_24h, "due_now": due_now, "queue_depth": queue_depth(instance.settings),
        "table": table,
    } | _patrolled_counts(instance, now)


def _patrolled_counts(instance, now) -> dict:
    with instance.session() as s:
        def n(since):
            return int(s.execute(select(func.count(func.distinct(PatrolRun.domain_id)))
                                 .where(PatrolRun.started_at >= since)).scalar() or 0)
        return {"patrolled_24h": n(now - timedelta(days=1)), "patrolled_7d": n(now - timedelta(days=7))}


# --- the workers the default budgets need --------------------------------------------------------

def workers_needed(domains: int, pages_per_run: float, runs_per_day: float, pages_per_hour_per_worker: float) -> float:
    """Crawl workers to patrol `domains` at the given cost: domains x pages x runs / (pages/h x 24)."""
    if pages_per_hour_per_worker <= 0:
        return float("inf")
    return domains * pages_per_run * runs_per_day / (pages_per_hour_per_worker * 24.0)
