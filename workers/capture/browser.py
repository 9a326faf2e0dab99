"""The crawler's browser: one headless Chromium, sandboxed (workers.capture.chromium), whose
every request goes through an address guard of its own (workers.net.guard) — there is no
other way out: `--proxy-server` points at the guard and loopback is not bypassed. A browser
without a running guard captures nothing (workers.capture.page checks `guard_of`).

Also here: DevTools helpers (`cdp`, `js`), the per-page DevTools set-up (`prepare`), and the
watchdog that releases chromedriver from a page that never answers.
"""
from __future__ import annotations

import json
import threading
import time

from workers.capture.records import Limits
from workers.net.addresses import resolve
from workers.net.guard import Guard

CAPTURE_FLAGS = ["--hide-scrollbars", "--autoplay-policy=no-user-gesture-required",
                 # Every frame in one renderer, so the page's DevTools session sees iframes' requests.
                 "--disable-site-isolation-trials", "--disable-features=IsolateOrigins,site-per-process"]


def open_browser(limits: Limits | None = None, extra_args=(), *, allow_private: bool = False, upstream: str = "",
                 resolver=resolve, sandbox: bool = True):
    """One headless Chromium behind its own address guard (chained to `upstream`, the crawl
    proxy), with the performance log on; a crawl keeps it for all its pages."""
    from workers.capture.chromium import new_driver
    limits = limits or Limits()
    guard = Guard(allow_private=allow_private, upstream=upstream, resolver=resolver).start()
    try:
        driver = new_driver(limits.width, limits.height, [*CAPTURE_FLAGS, *guard.chromium_args(), *extra_args],
                            script_timeout=15, sandbox=sandbox, capabilities={
                                "goog:loggingPrefs": {"performance": "ALL"},
                                "pageLoadStrategy": "none",             # we wait on DevTools events, with our own limits
                                "unhandledPromptBehavior": "dismiss"})  # alert() and friends never block a capture
    except BaseException:
        guard.stop()
        raise
    driver.kesu_guard = guard
    return driver


def guard_of(driver) -> Guard | None:
    """The browser's address guard when it is running, else None (nothing may be captured)."""
    guard = getattr(driver, "kesu_guard", None)
    return guard if isinstance(guard, Guard) and guard.up() else None


def cdp(driver, method, params=None):
    return driver.execute_cdp_cmd(method, params or {})


def js(driver, script, asynchronous=False):
    """Run page JavaScript; a dialog the page opened in between is dismissed and the call retried."""
    from selenium.common.exceptions import UnexpectedAlertPresentException
    for attempt in range(4):
        try:
            return (driver.execute_async_script if asynchronous else driver.execute_script)(script)
        except UnexpectedAlertPresentException:
            if attempt == 3:
                raise
            try:
                cdp(driver, "Page.handleJavaScriptDialog", {"accept": False})
            except Exception:
                pass


def prepare(driver, limits: Limits):
    cdp(driver, "Network.enable", {"maxTotalBufferSize": max(limits.page_bytes * 2, 64 << 20),
                                    "maxResourceBufferSize": max(limits.page_bytes, 16 << 20)})
    cdp(driver, "Network.setCacheDisabled", {"cacheDisabled": True})
    cdp(driver, "Network.setBypassServiceWorker", {"bypass": True})
    cdp(driver, "Page.enable")
    try:
        cdp(driver, "Page.setDownloadBehavior", {"behavior": "deny"})   # nothing lands on the crawler's disk
    except Exception:
        pass


class Watchdog(threading.Thread):
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
