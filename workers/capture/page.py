"""Capture one page as a real browser loads it: Chromium driven by Selenium and DevTools.

Everything stays in memory: the caller (workers.capture.crawl) hashes the media, asks the
matcher, and only then decides what is written (DESIGN §3). The pieces, each in its module:

* workers.capture.browser — the sandboxed Chromium and its address guard (every request the
  page makes, WebSockets and redirects included, goes through workers.net.guard);
* workers.capture.pageload — the DevTools events of one page load (each body taken as soon as
  its `loadingFinished` arrives, while the page is still alive);
* workers.capture.streams — ranged videos and HLS/DASH segments fetched whole, through the
  browser and so through the guard;
* workers.capture.artifacts — links, HTML, MHTML, the stamped screenshot, the media list;
* workers.capture.records — Limits, Exchange, CaptureResult.

Here: the sequence (navigate, pass a gate, scroll one viewport at a time until the page stops
growing, settle, fetch whole files, take artifacts, judge). Cache and service workers are
off, so what we record is what the server sent. A hostile page ends within limits: the time,
byte and scroll limits stop it, and what was captured until then is kept (status `limit`).
A browser whose guard is not running captures nothing: the capture refuses to start.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from workers.capture.artifacts import DATA_URL_KEEP, collect_media, decode_data_url, stamp, take_artifacts
from workers.capture.browser import Watchdog, cdp, guard_of, js, open_browser, prepare
from workers.capture.pageload import PageLoad
from workers.capture.records import CaptureError, CaptureResult, Exchange, Limits
from workers.capture.streams import fetch_whole, stream_parts
from workers.net.addresses import Refused
from workers.net.guard import Guard

# What callers use as `page.X` (workers.capture.crawl, the patrol, tests, benches).
__all__ = ["CaptureError", "CaptureResult", "Exchange", "Limits", "capture", "decode_data_url", "open_browser",
           "stamp", "stream_parts"]

GUARD_DOWN = "refused: the address guard is not running, so nothing was fetched"


def capture(url: str, driver=None, limits: Limits | None = None, allow_private: bool | None = None,
            on_load=None, extract=None) -> CaptureResult:
    """Load `url` in Chromium and return everything it fetched, in memory.

    `driver` comes from `open_browser` (its guard applies `allow_private` when given, else its
    own setting); without one, a browser is opened and closed for this page. `on_load(driver)`
    runs once the document has loaded, before scrolling (the patrol passes age gates and cookie
    walls there); when it returns something true the page is given time to reload or change,
    and that value is kept as `result.gate`. `extract(driver) -> dict` runs on the final DOM;
    its answer is `result.extracted` (the patrol's "next" link)."""
    limits = limits or Limits()
    started = time.monotonic()
    result = CaptureResult(url=url, final_url=url)
    if not url.startswith(("http:", "https:")):
        result.status, result.error = "error", f"not an http(s) URL: {url[:DATA_URL_KEEP]}"
        return result
    own = driver is None
    if own:
        driver = open_browser(limits, allow_private=bool(allow_private))
    try:
        guard = guard_of(driver)
        if guard is None:
            result.status, result.error = "error", GUARD_DOWN
            return result
        if allow_private is not None:
            guard.allow_private = allow_private
        try:
            guard.check_url(url)
        except Refused as exc:
            result.status, result.error = "error", str(exc) if str(exc).startswith("refused") else f"refused: {exc}"
            result.blocked.append(url)
            return result
        mark = guard.mark()
        result.browser = f"{driver.capabilities.get('browserName', 'chrome')} {driver.capabilities.get('browserVersion', '')}".strip()
        prepare(driver, limits)
        watchdog = Watchdog(driver, started + limits.page_seconds + 0.5)
        watchdog.start()
        try:
            _run(driver, url, result, limits, started, guard, on_load, extract)
        finally:
            watchdog.cancel()
            _note_refusals(result, guard.refused_since(mark))
        try:
            driver.get("about:blank")
            driver.get_log("performance")
        except Exception:
            pass
    finally:
        if own:
            try:
                driver.quit()
            except Exception:
                pass
    result.elapsed = time.monotonic() - started
    return result


def _note_refusals(result: CaptureResult, refusals: list[tuple[str, str]]) -> None:
    """What the guard refused during this page, in `blocked`; a refused page (or redirect) says why."""
    for target, _ in refusals:
        if target not in result.blocked:
            result.blocked.append(target)
    if result.status != "error" or not refusals:
        return
    final = result.final_url or result.url
    parts = urlsplit(final)
    tunnel = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    for target, why in refusals:
        if target in (final.split("#", 1)[0], tunnel):
            result.error = why if why.startswith("refused") else f"refused: {why}"
            return


def _run(driver, url, result: CaptureResult, limits: Limits, started: float, guard: Guard, on_load=None, extract=None):
    driver.get_log("performance")                     # forget what an earlier page left behind
    deadline = started + limits.page_seconds
    result.captured_at = datetime.now(timezone.utc)
    s = PageLoad(driver, result, limits, deadline)
    s.guard = guard
    s.extract = extract
    try:
        driver.get(url)
    except Exception as exc:
        result.status, result.error = "error", f"navigation failed: {str(exc).splitlines()[0][:300]}"
        return
    # 1. the load event of the main document (or its failure, or a limit)
    s.wait(lambda: s.main_loaded or s.main_failed)
    # 1b. an age gate or cookie wall: clicked once; the page may reload or change in place
    if on_load is not None and s.main_loaded and not s.main_failed and not s.over():
        try:
            acted = on_load(driver)
        except Exception:
            acted = None
        if acted:
            result.gate = str(acted)[:200]
            s.last_activity = time.monotonic()      # a reload starts within this quiet window
            s.settle(min(0.5, max(0.2, limits.idle_seconds)))
            s.wait(lambda: s.main_loaded or s.main_failed)
    # 2. scroll one viewport at a time until the page stops growing
    if s.main_loaded and not s.main_failed and not s.over():
        _scroll(driver, s, limits)
        # 3. let delayed loads (timers, lazy images) settle
        s.settle(limits.idle_seconds)
    s.pump()
    try:
        cdp(driver, "Page.stopLoading")
    except Exception:
        pass
    s.pump()
    main = s.ex.get(s.main_rid) if s.main_rid else None
    if main is not None:
        result.final_url = main.url
        result.http_status = main.status
        result.server_ip = main.remote_ip
    if main is None or main.status is None:
        s.data_urls.clear()              # the browser's own error page, not the site's
    # 4. whole files for ranged videos and stream segments the player has not loaded yet
    if not s.over():
        fetch_whole(driver, s, limits)
    # 5. page artifacts
    take_artifacts(driver, s, result, limits, main)
    result.exchanges = s.order
    result.bytes_received = s.received
    collect_media(s, result)
    # 6. status
    if s.main_failed:
        text = s.main_failed
        if "TOO_MANY_REDIRECTS" in text or text == "redirect loop":
            text = f"redirect loop ({text})"
        result.status, result.error = "error", text
    elif main is None or main.status is None:
        if not result.limits_hit:
            result.limits_hit.append("time")
        result.status, result.error = "limit", "limit: " + ",".join(result.limits_hit) + " (no response)"
    elif main.status >= 400:
        result.status, result.error = "error", f"HTTP {main.status}"
    elif result.limits_hit:
        result.status, result.error = "limit", "limit: " + ",".join(result.limits_hit)
    else:
        result.status, result.error = "ok", None


_METRICS = ("return [window.scrollY, window.innerHeight, Math.max(document.documentElement.scrollHeight,"
            " document.body ? document.body.scrollHeight : 0)];")


_STEP = ("const done = arguments[arguments.length - 1]; window.scrollBy(0, window.innerHeight);"
         " requestAnimationFrame(() => requestAnimationFrame(() => done(null)));")


def _scroll(driver, s: PageLoad, limits: Limits):
    """One viewport at a time; at the bottom, wait (bounded) for the page to grow."""
    quiet = min(0.3, limits.idle_seconds)
    grew_at_end = False
    for _ in range(limits.max_scrolls):
        if s.over():
            return
        try:
            y, vh, h = js(driver, _METRICS)
        except Exception:
            return
        if y + vh >= h - 2:
            s.settle(quiet)
            end = time.monotonic() + limits.idle_seconds
            grew_at_end = False
            while time.monotonic() < end and not s.over():
                s.pump()
                try:
                    grew_at_end = js(driver, _METRICS)[2] > h
                except Exception:
                    return
                if grew_at_end:
                    break
                time.sleep(0.1)
            if not grew_at_end:
                break
            continue
        try:
            js(driver, _STEP, asynchronous=True)
        except Exception:
            return
        s.settle(quiet)
    else:
        grew_at_end = True
    if grew_at_end and "scroll" not in s.r.limits_hit:
        s.r.limits_hit.append("scroll")
    try:
        js(driver, "window.scrollTo(0, 0);")
    except Exception:
        pass

