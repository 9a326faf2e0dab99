"""One page load as the browser's DevTools Network and Page domains report it: every exchange,
its body taken as soon as it finished, what is still in flight, and waiting until it settles."""
from __future__ import annotations

import base64
import json
import time

from workers.capture.browser import cdp
from workers.capture.records import CaptureResult, Exchange, Limits


class PageLoad:
    """Event bookkeeping for one page load."""

    def __init__(self, driver, result: CaptureResult, limits: Limits, deadline: float):
        self.d = driver
        self.r = result
        self.limits = limits
        self.deadline = deadline
        self.ex: dict[str, Exchange] = {}
        self.order: list[Exchange] = []
        self.inflight: set[str] = set()
        self.main_frame = cdp(driver, "Page.getFrameTree")["frameTree"]["frame"]["id"]
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
        if p.get("documentURL", "").startswith(("chrome", "devtools:")):
            return                  # asked for by the browser's own page (an error page's icons)
        if url.startswith("data:"):
            self.data_urls.append(url)
            return
        if not url.startswith(("http://", "https://", "blob:")):
            return                  # the browser's own pages (chrome://, extensions) are not the site's
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
        # A dedicated worker's own script is fetched for the worker's target, whose events this
        # session never sees: it must not keep the page "busy" until the time limit.
        if not (p.get("type") == "Script" and not p.get("loaderId") and p.get("documentURL") == url):
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
            got = cdp(self.d, "Network.getResponseBody", {"requestId": rid})
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
            cdp(self.d, "Page.handleJavaScriptDialog", {"accept": False})
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
