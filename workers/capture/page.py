"""Capture one page as a real browser loads it: Chromium driven by Selenium and DevTools.

Everything stays in memory: the caller (workers.capture.crawl) hashes the media, asks the matcher,
and only then decides what is written (DESIGN §3). The Network domain reports every
response through the performance log; each body is taken with `Network.getResponseBody`
as soon as its `loadingFinished` arrives, while the page is still alive. Cache and service
workers are off, so what we record is what the server sent. The page is scrolled one
viewport at a time until its height stops growing, for lazy loading; progressive videos
fetched in ranges and HLS/DASH segments the player did not ask for yet are fetched whole
through the browser (`Network.loadNetworkResource`), raw.

A hostile page ends within limits: the time, byte and scroll limits stop it, and what was
captured until then is kept (status `limit`). Requests to private, loopback and link-local
addresses are refused (the host is resolved before navigation, and a second DevTools
session intercepts every request with the Fetch domain) unless the settings allow them.
"""
from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

CAPTURE_FLAGS = ["--hide-scrollbars", "--autoplay-policy=no-user-gesture-required",
                 # Every frame in one renderer, so the page's DevTools session sees iframes' requests.
                 "--disable-site-isolation-trials", "--disable-features=IsolateOrigins,site-per-process"]

STREAM_MIMES = {"application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl",
                "application/dash+xml", "video/mp2t", "video/iso.segment"}
STREAM_EXT = (".m3u8", ".mpd", ".ts", ".m4s", ".mp4", ".webm", ".m4v", ".mov", ".mkv", ".ogv")
DATA_URL_KEEP = 64


class CaptureError(RuntimeError):
    pass


@dataclass
class Limits:
    page_seconds: float = 60.0          # wall time for one page, everything included
    page_bytes: int = 256 * 1024 * 1024  # bytes received (and kept) for one page
    max_scrolls: int = 40               # viewport steps before an ever-growing page counts as a limit
    idle_seconds: float = 1.0           # network quiet this long means the page has settled
    max_redirects: int = 20
    max_screenshot_height: int = 16000
    max_segments: int = 400             # HLS/DASH segments fetched beyond what the player loaded
    width: int = 1280
    height: int = 900

    @classmethod
    def from_settings(cls, settings, remaining_seconds: float | None = None, remaining_bytes: int | None = None):
        lim = cls(page_seconds=float(settings.crawl_page_seconds), page_bytes=int(settings.crawl_page_bytes),
                  max_scrolls=int(settings.crawl_max_scrolls), idle_seconds=float(settings.crawl_idle_seconds),
                  max_segments=int(settings.crawl_max_segments))
        if remaining_seconds is not None:
            lim.page_seconds = max(1.0, min(lim.page_seconds, remaining_seconds))
        if remaining_bytes is not None:
            lim.page_bytes = max(0, min(lim.page_bytes, remaining_bytes))
        return lim


@dataclass
class Exchange:
    """One request and its response as the browser saw them (a WARC request/response pair)."""
    request_id: str
    url: str
    method: str = "GET"
    request_headers: dict = field(default_factory=dict)
    post_data: str | None = None
    resource_type: str = ""
    frame_id: str = ""
    started: float = 0.0                 # wall clock (epoch seconds)
    status: int | None = None
    status_text: str = ""
    protocol: str = ""
    headers: dict = field(default_factory=dict)
    mime: str = ""
    remote_ip: str | None = None
    body: bytes | None = None
    truncated: bool = False
    error: str | None = None
    redirect_to: str | None = None
    finished: bool = False
    source: str = "browser"              # browser | fetched (whole file fetched through the browser)

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.body).hexdigest() if self.body is not None else None


@dataclass
class CaptureResult:
    url: str
    final_url: str = ""
    status: str = "error"                # ok | error | limit
    http_status: int | None = None
    error: str | None = None
    server_ip: str | None = None
    redirects: list = field(default_factory=list)   # [{"url", "status", "location"}]
    captured_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    html: bytes | None = None
    html_source: str = "served"          # served | dom (when the served body never completed)
    mhtml: bytes | None = None
    screenshot: bytes | None = None
    links: list = field(default_factory=list)
    media: list = field(default_factory=list)       # [{"url", "mime", "body", "sha256", "bytes", ...}]
    exchanges: list = field(default_factory=list)   # every Exchange, in order (for the WARC)
    limits_hit: list = field(default_factory=list)
    blocked: list = field(default_factory=list)     # URLs refused (private addresses)
    browser: str = ""
    user_agent: str = ""
    elapsed: float = 0.0
    bytes_received: int = 0
    gate: str | None = None             # what `on_load` did (an age gate or cookie wall passed)
    extracted: dict = field(default_factory=dict)   # what `extract` read from the loaded DOM

    def summary(self) -> dict:
        return {"url": self.url, "final_url": self.final_url, "status": self.status, "error": self.error,
                "media": [{"url": m["url"], "sha256": m["sha256"], "mime": m["mime"], "bytes": m["bytes"]}
                          for m in self.media]}


# --- addresses ------------------------------------------------------------------------

def ip_is_private(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0].strip("[]"))
    except ValueError:
        return True
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return not addr.is_global or addr.is_multicast


_dns_cache: dict = {}


def resolve(host: str) -> list[str]:
    host = host.strip("[]")
    if host in _dns_cache and _dns_cache[host][0] > time.monotonic():
        return _dns_cache[host][1]
    try:
        ips = sorted({ai[4][0] for ai in socket.getaddrinfo(host, None)})
    except (socket.gaierror, UnicodeError):
        ips = []
    _dns_cache[host] = (time.monotonic() + 60, ips)
    return ips


def url_allowed(url: str, allow_private: bool, resolver=resolve) -> tuple[bool, str]:
    """(allowed, reason). Only http(s) to hosts whose every address is public, unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return False, f"scheme {parts.scheme or '?'} not crawled"
    host = parts.hostname
    if not host:
        return False, "no host"
    if allow_private:
        return True, ""
    ips = resolver(host)
    if not ips:
        return False, f"host {host} does not resolve"
    bad = [ip for ip in ips if ip_is_private(ip)]
    if bad:
        return False, f"refused: {host} resolves to a private, loopback or link-local address"
    return True, ""


class _FetchGuard(threading.Thread):
    """A second DevTools session on the page that pauses every request (Fetch domain) and
    fails those to private addresses. Redirect hops and iframes pass through it too."""

    def __init__(self, debugger_address: str, target_id: str, allow_private: bool, resolver=resolve):
        super().__init__(daemon=True, name="kesu-fetch-guard")
        import websocket
        self.ws = websocket.create_connection(f"ws://{debugger_address}/devtools/page/{target_id}",
                                              suppress_origin=True, timeout=10)
        self.allow_private = allow_private
        self.resolver = resolver
        self.blocked: list[str] = []
        self._id = 0
        self._lock = threading.Lock()
        self._send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})
        self.ws.settimeout(None)

    def _send(self, method, params):
        with self._lock:
            self._id += 1
            self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))

    def run(self):
        try:
            while True:
                msg = json.loads(self.ws.recv())
                if msg.get("method") != "Fetch.requestPaused":
                    continue
                p = msg["params"]
                url = p["request"]["url"]
                ok = True
                if url.startswith(("http:", "https:")):
                    ok, _ = url_allowed(url, self.allow_private, self.resolver)
                if ok:
                    self._send("Fetch.continueRequest", {"requestId": p["requestId"]})
                else:
                    self.blocked.append(url)
                    self._send("Fetch.failRequest", {"requestId": p["requestId"], "errorReason": "BlockedByClient"})
        except Exception:
            return

    def close(self):
        try:
            self._send("Fetch.disable", {})
        except Exception:
            pass
        try:
            self.ws.close()
        except Exception:
            pass


class _Watchdog(threading.Thread):
    """Stops a page that outlives its time limit from outside chromedriver.

    A server that accepts the connection and never answers leaves the navigation pending,
    and chromedriver then holds every later command (even reading the log) indefinitely.
    Past the deadline this sends `Page.stopLoading` over a DevTools connection of its own,
    every second until the capture is done, which releases chromedriver."""

    def __init__(self, driver, deadline: float):
        super().__init__(daemon=True, name="kesu-capture-watchdog")
        self.address = (driver.capabilities.get("goog:chromeOptions") or {}).get("debuggerAddress")
        self.target = driver.current_window_handle if self.address else None
        self.deadline = deadline
        self.done = threading.Event()
        self.fired = 0

    def run(self):
        if not self.address:
            return
        while not self.done.wait(max(0.05, self.deadline - time.monotonic())):
            try:
                import websocket
                ws = websocket.create_connection(f"ws://{self.address}/devtools/page/{self.target}",
                                                 suppress_origin=True, timeout=5)
                try:
                    ws.send(json.dumps({"id": 1, "method": "Page.stopLoading", "params": {}}))
                    ws.recv()
                finally:
                    ws.close()
                self.fired += 1
            except Exception:
                pass
            self.deadline = time.monotonic() + 1.0

    def cancel(self):
        self.done.set()


# --- the browser ------------------------------------------------------------------------

def open_browser(limits: Limits | None = None, extra_args=()):
    """One headless Chromium with the performance log on; a crawl keeps it for all its pages."""
    from workers.capture.chromium import new_driver
    limits = limits or Limits()
    return new_driver(limits.width, limits.height, [*CAPTURE_FLAGS, *extra_args], script_timeout=15, capabilities={
        "goog:loggingPrefs": {"performance": "ALL"},
        "pageLoadStrategy": "none",                 # we wait on DevTools events, with our own limits
        "unhandledPromptBehavior": "dismiss"})      # alert() and friends never block a capture


def _cdp(driver, method, params=None):
    return driver.execute_cdp_cmd(method, params or {})


def _js(driver, script, asynchronous=False):
    """Run page JavaScript; a dialog the page opened in between is dismissed and the call retried."""
    from selenium.common.exceptions import UnexpectedAlertPresentException
    for attempt in range(4):
        try:
            return (driver.execute_async_script if asynchronous else driver.execute_script)(script)
        except UnexpectedAlertPresentException:
            if attempt == 3:
                raise
            try:
                _cdp(driver, "Page.handleJavaScriptDialog", {"accept": False})
            except Exception:
                pass


def _prepare(driver, limits: Limits):
    _cdp(driver, "Network.enable", {"maxTotalBufferSize": max(limits.page_bytes * 2, 64 << 20),
                                    "maxResourceBufferSize": max(limits.page_bytes, 16 << 20)})
    _cdp(driver, "Network.setCacheDisabled", {"cacheDisabled": True})
    _cdp(driver, "Network.setBypassServiceWorker", {"bypass": True})
    _cdp(driver, "Page.enable")
    try:
        _cdp(driver, "Page.setDownloadBehavior", {"behavior": "deny"})   # nothing lands on the crawler's disk
    except Exception:
        pass


def _is_media(ex: Exchange) -> bool:
    return ex.body is not None and _media_kind(ex)


def _media_kind(ex: Exchange) -> bool:
    """An image, video, audio or stream response (by type, MIME or path), body or not."""
    if ex.status not in (200, 203, 206):
        return False
    mime = (ex.mime or "").lower()
    if mime.startswith(("image/", "video/", "audio/")) or mime in STREAM_MIMES:
        return True
    if ex.resource_type in ("Image", "Media"):
        return True
    path = urlsplit(ex.url).path.lower()
    return path.endswith(STREAM_EXT)


def _is_hls(ex: Exchange) -> bool:
    return "mpegurl" in (ex.mime or "").lower() or urlsplit(ex.url).path.lower().endswith(".m3u8")


def _is_dash(ex: Exchange) -> bool:
    return "dash+xml" in (ex.mime or "").lower() or urlsplit(ex.url).path.lower().endswith(".mpd")


def stream_parts(ex: Exchange) -> list[str]:
    """URLs an HLS or DASH manifest names (segments, init sections, variant playlists)."""
    text = (ex.body or b"").decode("utf-8", "replace")
    urls = []
    if _is_hls(ex):
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                for uri in re.findall(r'#EXT-X-(?:MAP|MEDIA|I-FRAME-STREAM-INF)[^\n]*?URI="([^"]+)"', line):
                    urls.append(urljoin(ex.url, uri))
                continue
            urls.append(urljoin(ex.url, line))
    elif _is_dash(ex):
        base = ex.url
        m = re.search(r"<BaseURL>([^<]+)</BaseURL>", text)
        if m:
            base = urljoin(ex.url, m.group(1).strip())
        for attr in re.findall(r'(?:media|sourceURL)="([^"$]+)"', text):
            urls.append(urljoin(base, attr))
    seen, out = set(), []
    for u in urls:
        if u not in seen and u.startswith(("http:", "https:")):
            seen.add(u)
            out.append(u)
    return out


def decode_data_url(url: str) -> tuple[str, bytes] | None:
    try:
        head, payload = url[5:].split(",", 1)
    except ValueError:
        return None
    parts = head.split(";")
    mime = parts[0] or "text/plain"
    try:
        body = base64.b64decode(payload + "=" * (-len(payload) % 4)) if "base64" in parts[1:] else unquote_to_bytes(payload)
    except Exception:
        return None
    return mime, body


_DOM_SCAN = r"""
const out = {links: [], data: [], ua: navigator.userAgent};
let total = 0;   // data: URLs kept: at most 200, 32 MB in all
const add = (u) => {
  if (typeof u !== 'string' || !u.startsWith('data:') || out.data.length >= 200 || total + u.length > 33554432) return;
  total += u.length; out.data.push(u);
};
const scan = (doc) => {
  for (const a of doc.querySelectorAll('a[href], area[href]')) if (out.links.length < 2000) out.links.push(a.href);
  for (const el of doc.querySelectorAll('img, source, video, audio, input[type=image]')) {
    add(el.currentSrc); add(el.src); add(el.poster);
    for (const part of (el.srcset || '').split(',')) add(part.trim().split(/\s+/)[0]);
  }
  for (const el of doc.querySelectorAll('*')) {
    const bg = getComputedStyle(el).backgroundImage;
    if (bg && bg.includes('data:')) for (const m of bg.matchAll(/url\("?(data:[^")]+)"?\)/g)) add(m[1]);
  }
  for (const f of doc.querySelectorAll('iframe, frame')) { try { if (f.contentDocument) scan(f.contentDocument); } catch (e) {} }
};
scan(document);
return out;
"""


class _Session:
    """Event bookkeeping for one page load."""

    def __init__(self, driver, result: CaptureResult, limits: Limits, deadline: float):
        self.d = driver
        self.r = result
        self.limits = limits
        self.deadline = deadline
        self.ex: dict[str, Exchange] = {}
        self.order: list[Exchange] = []
        self.inflight: set[str] = set()
        self.main_frame = _cdp(driver, "Page.getFrameTree")["frameTree"]["frame"]["id"]
        self.main_rid: str | None = None
        self.main_loaded = False
        self.main_failed: str | None = None
        self.navigations = 0
        self.received = 0
        self.kept = 0
        self.last_activity = time.monotonic()
        self.data_urls: list[str] = []

    # -- events --
    def pump(self):
        for entry in self.d.get_log("performance"):
            try:
                msg = json.loads(entry["message"])["message"]
            except (ValueError, KeyError):
                continue
            handler = getattr(self, "on_" + msg.get("method", "").replace(".", "_"), None)
            if handler:
                handler(msg.get("params", {}))

    def on_Network_requestWillBeSent(self, p):
        rid, req = p["requestId"], p["request"]
        url = req["url"]
        self.last_activity = time.monotonic()
        if url.startswith("data:"):
            self.data_urls.append(url)
            return
        if p.get("redirectResponse") and rid in self.ex:
            hop = self.ex.pop(rid)
            self._fill_response(hop, p["redirectResponse"])
            hop.redirect_to = url
            hop.finished = True
            hop.request_id = f"{rid}#{sum(1 for e in self.order if e.request_id.startswith(rid))}"
            if rid == self.main_rid:
                self.r.redirects.append({"url": hop.url, "status": hop.status, "location": url})
                if len(self.r.redirects) > self.limits.max_redirects:
                    self.main_failed = self.main_failed or "redirect loop"
        ex = Exchange(request_id=rid, url=url, method=req.get("method", "GET"),
                      request_headers=req.get("headers", {}), post_data=req.get("postData"),
                      resource_type=p.get("type", ""), frame_id=p.get("frameId", ""),
                      started=p.get("wallTime") or time.time())
        self.ex[rid] = ex
        self.order.append(ex)
        self.inflight.add(rid)
        if p.get("type") == "Document" and p.get("frameId") == self.main_frame and rid != self.main_rid:
            if self.main_rid is not None and self.main_rid in self.ex:
                prev = self.ex[self.main_rid]
                self.r.redirects.append({"url": prev.url, "status": prev.status, "location": url, "client": True})
            self.main_rid = rid
            self.main_loaded = False
            # what the previous document still had loading is cancelled with it (Chromium does
            # not always say so, e.g. for its favicon request): it must not keep the page "busy"
            self.inflight = {rid}
            self.navigations += 1
            if self.navigations > self.limits.max_redirects:
                self.main_failed = self.main_failed or "redirect loop"

    def _fill_response(self, ex: Exchange, resp: dict):
        ex.status = resp.get("status")
        ex.status_text = resp.get("statusText", "")
        ex.protocol = resp.get("protocol", "")
        ex.headers = resp.get("headers", {})
        ex.mime = resp.get("mimeType", "")
        ex.remote_ip = resp.get("remoteIPAddress")

    def on_Network_responseReceived(self, p):
        ex = self.ex.get(p["requestId"])
        if ex is not None:
            self._fill_response(ex, p["response"])
            ex.resource_type = p.get("type", ex.resource_type)
        self.last_activity = time.monotonic()

    def on_Network_dataReceived(self, p):
        self.received += int(p.get("dataLength", 0))
        self.last_activity = time.monotonic()
        if self.received > self.limits.page_bytes and "bytes" not in self.r.limits_hit:
            self.r.limits_hit.append("bytes")

    def on_Network_loadingFinished(self, p):
        rid = p["requestId"]
        self.inflight.discard(rid)
        self.last_activity = time.monotonic()
        ex = self.ex.get(rid)
        if ex is None or ex.finished:
            return
        ex.finished = True
        size = int(p.get("encodedDataLength", 0))
        if self.kept + size > self.limits.page_bytes:
            ex.truncated = True
            if "bytes" not in self.r.limits_hit:
                self.r.limits_hit.append("bytes")
            return
        try:
            got = _cdp(self.d, "Network.getResponseBody", {"requestId": rid})
            ex.body = base64.b64decode(got["body"]) if got.get("base64Encoded") else got["body"].encode("utf-8")
            self.kept += len(ex.body)
        except Exception as exc:   # evicted, or a body the browser never kept
            ex.error = ex.error or f"body unavailable: {str(exc).splitlines()[0][:200]}"

    def on_Network_loadingFailed(self, p):
        rid = p["requestId"]
        self.inflight.discard(rid)
        ex = self.ex.get(rid)
        if ex is not None:
            ex.error = p.get("errorText") or "failed"
            if p.get("blockedReason"):
                ex.error += f" ({p['blockedReason']})"
            ex.finished = True
        if rid == self.main_rid and not p.get("canceled"):
            self.main_failed = self.main_failed or (p.get("errorText") or "failed")

    def on_Page_javascriptDialogOpening(self, p):
        """alert(), confirm(), prompt(), beforeunload: dismissed at once, so the page goes on loading."""
        try:
            _cdp(self.d, "Page.handleJavaScriptDialog", {"accept": False})
        except Exception:
            try:
                self.d.switch_to.alert.dismiss()
            except Exception:
                pass

    def on_Page_loadEventFired(self, p):
        if self.main_rid is not None and self.main_rid in self.ex and self.ex[self.main_rid].status is not None:
            self.main_loaded = True

    # -- waiting --
    def over(self) -> bool:
        if time.monotonic() >= self.deadline:
            if "time" not in self.r.limits_hit:
                self.r.limits_hit.append("time")
            return True
        return "bytes" in self.r.limits_hit

    def busy(self) -> set:
        """Requests still loading that the page waits on (streams already answering don't count)."""
        out = set()
        for rid in self.inflight:
            ex = self.ex.get(rid)
            if ex is None:
                continue
            if ex.resource_type in ("Media", "EventSource", "WebSocket") and ex.status is not None:
                continue
            out.add(rid)
        return out

    def wait(self, condition, poll=0.05) -> bool:
        while True:
            self.pump()
            if condition():
                return True
            if self.over() or self.main_failed:
                return False
            time.sleep(poll)

    def settle(self, quiet: float) -> bool:
        return self.wait(lambda: not self.busy() and time.monotonic() - self.last_activity >= quiet)


def capture(url: str, driver=None, limits: Limits | None = None, allow_private: bool = False,
            resolver=resolve, on_load=None, extract=None) -> CaptureResult:
    """Load `url` in Chromium and return everything it fetched, in memory.

    `on_load(driver)` runs once the document has loaded, before scrolling (workers.capture.patrol passes
    age gates and cookie walls there); when it returns something true the page is given time to
    reload or change, and that value is kept as `result.gate`. `extract(driver) -> dict` runs on
    the final DOM; its answer is `result.extracted` (the patrol's "next" link)."""
    limits = limits or Limits()
    started = time.monotonic()
    result = CaptureResult(url=url, final_url=url)
    if url.startswith(("http:", "https:")):
        ok, reason = url_allowed(url, allow_private, resolver)
    else:
        ok, reason = False, f"not an http(s) URL: {url[:DATA_URL_KEEP]}"
    if not ok:
        result.status, result.error = "error", reason
        if reason.startswith("refused"):
            result.blocked.append(url)
        return result
    own = driver is None
    if own:
        driver = open_browser(limits)
    guard = None
    try:
        result.browser = f"{driver.capabilities.get('browserName', 'chrome')} {driver.capabilities.get('browserVersion', '')}".strip()
        _prepare(driver, limits)
        if not allow_private:
            address = (driver.capabilities.get("goog:chromeOptions") or {}).get("debuggerAddress")
            if address:
                try:
                    guard = _FetchGuard(address, driver.current_window_handle, allow_private, resolver)
                    guard.start()
                except Exception:
                    guard = None
        watchdog = _Watchdog(driver, started + limits.page_seconds + 0.5)
        watchdog.start()
        try:
            _run(driver, url, result, limits, started, allow_private, resolver, on_load, extract)
        finally:
            watchdog.cancel()
    finally:
        if guard is not None:
            result.blocked.extend(guard.blocked)
            guard.close()
        try:
            driver.get("about:blank")
            driver.get_log("performance")
        except Exception:
            pass
        if own:
            try:
                driver.quit()
            except Exception:
                pass
    result.elapsed = time.monotonic() - started
    return result


def _run(driver, url, result: CaptureResult, limits: Limits, started: float, allow_private: bool, resolver,
         on_load=None, extract=None):
    driver.get_log("performance")                     # forget what an earlier page left behind
    deadline = started + limits.page_seconds
    result.captured_at = datetime.now(timezone.utc)
    s = _Session(driver, result, limits, deadline)
    s.allow_private, s.resolver = allow_private, resolver
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
        _cdp(driver, "Page.stopLoading")
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
        _fetch_whole(driver, s, limits)
    # 5. page artifacts
    _artifacts(driver, s, result, limits, main)
    result.exchanges = s.order
    result.bytes_received = s.received
    _collect_media(s, result)
    # 6. status
    if s.main_failed:
        text = s.main_failed
        if "TOO_MANY_REDIRECTS" in text or text == "redirect loop":
            text = f"redirect loop ({text})"
        elif "BLOCKED_BY_CLIENT" in text:
            text = f"refused: private address ({text})"
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


def _scroll(driver, s: _Session, limits: Limits):
    """One viewport at a time; at the bottom, wait (bounded) for the page to grow."""
    quiet = min(0.3, limits.idle_seconds)
    grew_at_end = False
    for _ in range(limits.max_scrolls):
        if s.over():
            return
        try:
            y, vh, h = _js(driver, _METRICS)
        except Exception:
            return
        if y + vh >= h - 2:
            s.settle(quiet)
            end = time.monotonic() + limits.idle_seconds
            grew_at_end = False
            while time.monotonic() < end and not s.over():
                s.pump()
                try:
                    grew_at_end = _js(driver, _METRICS)[2] > h
                except Exception:
                    return
                if grew_at_end:
                    break
                time.sleep(0.1)
            if not grew_at_end:
                break
            continue
        try:
            _js(driver, _STEP, asynchronous=True)
        except Exception:
            return
        s.settle(quiet)
    else:
        grew_at_end = True
    if grew_at_end and "scroll" not in s.r.limits_hit:
        s.r.limits_hit.append("scroll")
    try:
        _js(driver, "window.scrollTo(0, 0);")
    except Exception:
        pass


def _load_whole(driver, s: _Session, url: str, budget: int) -> Exchange | None:
    ex = Exchange(request_id=f"fetch-{len(s.order)}", url=url, started=time.time(), source="fetched")
    try:
        got = _cdp(driver, "Network.loadNetworkResource", {
            "frameId": s.main_frame, "url": url,
            "options": {"disableCache": True, "includeCredentials": True}})["resource"]
    except Exception as exc:
        ex.error = str(exc).splitlines()[0][:200]
        return ex
    ex.status = got.get("httpStatusCode")
    ex.headers = got.get("headers") or {}
    ex.mime = next((v.split(";")[0].strip() for k, v in ex.headers.items() if k.lower() == "content-type"), "")
    handle = got.get("stream")
    if not got.get("success") or not handle:
        ex.error = got.get("netErrorName") or "failed"
        return ex
    buf = io.BytesIO()
    try:
        while True:
            if time.monotonic() >= s.deadline:
                ex.truncated = True
                break
            chunk = _cdp(driver, "IO.read", {"handle": handle, "size": 1 << 20})
            data = base64.b64decode(chunk["data"]) if chunk.get("base64Encoded") else chunk["data"].encode("latin-1")
            buf.write(data)
            if buf.tell() > budget:
                ex.truncated = True
                break
            if chunk.get("eof"):
                break
    finally:
        try:
            _cdp(driver, "IO.close", {"handle": handle})
        except Exception:
            pass
    ex.body = buf.getvalue()
    ex.finished = True
    return ex


def _header(ex: Exchange, name: str) -> str | None:
    return next((v for k, v in (ex.headers or {}).items() if k.lower() == name), None)


def _total_size(ex: Exchange) -> int | None:
    """The whole file's size as the server declared it (Content-Range total, or Content-Length of a 200)."""
    rng = _header(ex, "content-range")
    if rng and "/" in rng and rng.rsplit("/", 1)[1].strip().isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = _header(ex, "content-length")
    if ex.status == 200 and length and length.strip().isdigit():
        return int(length)
    return None


def _complete(ex: Exchange) -> bool:
    if ex.body is None or ex.truncated:
        return False
    total = _total_size(ex)
    if ex.status == 200:
        encoded = (_header(ex, "content-encoding") or "identity").lower() != "identity"
        return total is None or encoded or total == len(ex.body)
    return ex.status == 206 and total == len(ex.body)


def _fetch_whole(driver, s: _Session, limits: Limits):
    have = {e.url for e in s.order if _complete(e)}
    wanted: list[str] = []
    for e in list(s.order):
        if e.url in have or e.url in wanted or e.status not in (200, 206) or e.source != "browser":
            continue
        total = _total_size(e)
        if e.resource_type != "Media":
            # An image whose body the browser did not keep (or kept short): fetch it again, whole.
            encoded = (_header(e, "content-encoding") or "identity").lower() != "identity"
            short = e.body is None or (total is not None and not encoded and len(e.body) != total)
            if _media_kind(e) and short and not e.truncated and total is not None \
                    and total <= limits.page_bytes - s.kept:
                wanted.append(e.url)
            continue
        if total is None or total > limits.page_bytes - s.kept:
            # Unknown or over the budget: keep what the player got; the page counts as limited.
            if "bytes" not in s.r.limits_hit:
                s.r.limits_hit.append("bytes")
            continue
        wanted.append(e.url)
    queue = [e for e in s.order if e.body is not None and (_is_hls(e) or _is_dash(e))]
    segments = 0
    while queue or wanted:
        if queue:
            manifest = queue.pop(0)
            for part in stream_parts(manifest):
                if part not in have and part not in wanted:
                    wanted.append(part)
            continue
        url = wanted.pop(0)
        if url in have:
            continue
        if s.over() or segments >= limits.max_segments:
            if segments >= limits.max_segments and "segments" not in s.r.limits_hit:
                s.r.limits_hit.append("segments")
            break
        ok, _ = url_allowed(url, s.allow_private, s.resolver)
        if not ok:
            s.r.blocked.append(url)
            continue
        segments += 1
        ex = _load_whole(driver, s, url, limits.page_bytes - s.kept)
        if ex is None:
            continue
        s.order.append(ex)
        if ex.body is not None:
            s.kept += len(ex.body)
            s.received += len(ex.body)
            have.add(url)
            if ex.truncated and "bytes" not in s.r.limits_hit and time.monotonic() < s.deadline:
                s.r.limits_hit.append("bytes")
            if _is_hls(ex) or _is_dash(ex):
                queue.append(ex)


def _artifacts(driver, s: _Session, result: CaptureResult, limits: Limits, main: Exchange | None):
    if main is None or main.status is None:
        return                          # nothing of the site's own arrived (an error page is the browser's)
    # Only a page's HTML is its source: when the URL is the media itself, its bytes are media
    # (kept as such when they match), and their hash must not stand as a page's in the clear.
    if main.body is not None and not main.truncated and "html" in (main.mime or "").lower():
        result.html = main.body
    scan = None
    try:
        scan = _js(driver, _DOM_SCAN)
    except Exception:
        pass
    if scan:
        result.user_agent = scan.get("ua", "")
        links, seen = [], set()
        for href in scan.get("links", []):
            if isinstance(href, str) and href.startswith(("http:", "https:")):
                href = href.split("#", 1)[0]
                if href not in seen:
                    seen.add(href)
                    links.append(href)
        result.links = links
        s.data_urls.extend(scan.get("data", []))
    if getattr(s, "extract", None) is not None:
        try:
            result.extracted = dict(s.extract(driver) or {})
        except Exception:
            pass
    if result.html is None:
        try:
            dom = _js(driver, "return document.documentElement ? document.documentElement.outerHTML : '';")
            if dom:
                result.html, result.html_source = dom.encode("utf-8"), "dom"
        except Exception:
            pass
    try:
        result.mhtml = _cdp(driver, "Page.captureSnapshot", {"format": "mhtml"})["data"].encode("utf-8")
    except Exception:
        pass
    try:
        result.screenshot = _screenshot(driver, result, limits)
    except Exception:
        pass


def _screenshot(driver, result: CaptureResult, limits: Limits) -> bytes:
    metrics = _cdp(driver, "Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics.get("contentSize")
    width = max(1, min(int(size["width"]), 4 * limits.width))
    height = max(1, min(int(size["height"]), limits.max_screenshot_height))
    shot = _cdp(driver, "Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    return stamp(base64.b64decode(shot["data"]), result.captured_at, result.final_url or result.url)


def stamp(png: bytes, when: datetime, url: str) -> bytes:
    """Draw the UTC capture time (and the URL) in a band above the screenshot."""
    from PIL import Image, ImageDraw, ImageFont
    page = Image.open(io.BytesIO(png)).convert("RGB")
    band = 28
    out = Image.new("RGB", (page.width, page.height + band), (255, 255, 255))
    out.paste(page, (0, band))
    draw = ImageDraw.Draw(out)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:
        font = ImageFont.load_default()
    draw.rectangle([0, 0, page.width, band - 1], fill=(255, 244, 200))
    text = f"captured {when.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC  {url}"
    draw.text((6, 5), text[:300], fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _collect_media(s: _Session, result: CaptureResult):
    media, seen = [], set()
    whole = {ex.url for ex in s.order if _is_media(ex) and _complete(ex)}
    for ex in s.order:
        if not _is_media(ex) or (ex.url in whole and not _complete(ex)):
            continue
        key = (ex.url, ex.sha256)
        if key in seen:
            continue
        seen.add(key)
        media.append({"url": ex.url, "mime": (ex.mime or "").lower(), "body": ex.body, "sha256": ex.sha256,
                      "bytes": len(ex.body), "truncated": ex.truncated, "status": ex.status,
                      "source": ex.source, "type": ex.resource_type})
    for url in s.data_urls:
        decoded = decode_data_url(url)
        if not decoded:
            continue
        mime, body = decoded
        if not mime.lower().startswith(("image/", "video/", "audio/")):
            continue
        sha = hashlib.sha256(body).hexdigest()
        key = (url[:DATA_URL_KEEP], sha)
        if key in seen:
            continue
        seen.add(key)
        media.append({"url": url[:DATA_URL_KEEP], "mime": mime.lower(), "body": body, "sha256": sha,
                      "bytes": len(body), "truncated": False, "status": None, "source": "data", "type": "Image"})
    result.media = media
