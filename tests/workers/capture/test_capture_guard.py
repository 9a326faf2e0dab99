"""The address guard at the network level, with real Chromium: a "public" page whose image,
fetch, WebSocket, Web Worker, stream segment, WebRTC (STUN over UDP) and redirects aim at
loopback (and a private name) reaches none of them; a capture refuses to run when the guard is down; the crawler's
Chromium runs in its sandbox.

The page's host, public.test, resolves (for the guard only) to a public address that is never
dialled: the guard chains to an upstream proxy (tests/net_helpers.FakeInternet, what an
organisation's crawl_proxy would be) that maps it to the loopback site. The same capture with
allow_private=True first shows that every probe really fires, so the test can fail."""
import http.server
import socket
import threading
import time

import pytest
from net_helpers import FakeInternet, Probe

from workers.capture import chromium
from workers.capture import page as cap
from workers.net import addresses

pytestmark = pytest.mark.browser

PUBLIC = "93.184.216.34"
PROBES = ["GET /img", "GET /img-localhost", "GET /redirected", "GET /fetch", "GET /ws-probe", "GET /worker",
          "GET /segment.ts", "GET /main"]


def _page(p: int, p6: int, udp: int) -> dict:
    lo = f"http://127.0.0.1:{p}"
    return {
        "/probe.html": ("text/html", f"""<!doctype html><html><body><p>probe page</p>
<img src="/ok.png"><img src="{lo}/img"><img src="http://[::1]:{p6}/img6"><img src="http://localhost:{p}/img-localhost">
<img src="/to-loopback.png"><img src="http://intranet.test/private.png">
<script>
window.probes = {{}};
fetch('{lo}/fetch', {{mode: 'no-cors'}}).then(() => probes.fetch = 'ok', () => probes.fetch = 'failed');
const ws = new WebSocket('ws://127.0.0.1:{p}/ws-probe');
ws.onerror = () => probes.ws = 'failed'; ws.onopen = () => probes.ws = 'open';
new Worker('/worker.js').onmessage = (e) => probes.worker = e.data;
fetch('/stream.m3u8').then(r => r.text());
// keep one request open until the fetch, WebSocket and worker probes have each ended, so the
// capture does not settle before they had their chance
fetch('/hold').catch(() => null);
const check = () => ['fetch', 'ws', 'worker'].every(k => probes[k]) ? fetch('/release') : setTimeout(check, 50);
check();
const pc = new RTCPeerConnection({{iceServers: [{{urls: 'stun:127.0.0.1:{udp}'}}]}});
pc.createDataChannel('x'); pc.createOffer().then(o => pc.setLocalDescription(o));
</script></body></html>"""),
        "/worker.js": ("text/javascript", f"fetch('{lo}/worker').then(() => postMessage('ok'), () => postMessage('failed'));"),
        "/stream.m3u8": ("application/vnd.apple.mpegurl",
                         "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/seg-redirect.ts\n#EXT-X-ENDLIST\n"),
        "/seg-redirect.ts": (302, f"{lo}/segment.ts"),
        "/to-loopback.png": (302, f"{lo}/redirected"),
        "/go": (302, f"{lo}/main"),
        "/ok.png": ("image/png", "control"),
    }


class _Site(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    hits: list = []
    released: threading.Event

    def do_GET(self):
        self.hits.append(self.path)
        if self.path in ("/hold", "/release"):
            if self.path == "/hold":
                self.released.wait(15)
                self.released.clear()
            else:
                self.released.set()
            self.send_response(204)
            self.end_headers()
            return
        first, second = self.routes.get(self.path, ("text/plain", "missing"))
        if isinstance(first, int):
            self.send_response(first)
            self.send_header("Location", second)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = second.encode()
        self.send_response(200)
        self.send_header("Content-Type", first)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def world():
    probe, probe6 = Probe("127.0.0.1"), Probe("::1")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0)
    handler = type("H", (_Site,), {"routes": _page(probe.port, probe6.port, udp.getsockname()[1]), "hits": [],
                                   "released": threading.Event()})
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    s, p = site.server_address[1], probe.port
    net = FakeInternet({f"public.test:{s}": s, f"{PUBLIC}:{s}": s, f"127.0.0.1:{p}": p, f"localhost:{p}": p,
                        f"::1:{probe6.port}": ("::1", probe6.port)})
    yield {"probe": probe, "probe6": probe6, "udp": udp, "net": net, "base": f"http://public.test:{s}",
           "hits": handler.hits}
    for server in (probe, probe6, net):
        server.stop()
    udp.close()
    site.shutdown()
    site.server_close()


def _resolver(host):
    if host == "public.test":
        return [PUBLIC]
    if host == "intranet.test":
        return ["10.1.2.3"]          # refused before any connection; FakeInternet would never dial it either
    return addresses.resolve(host)


def test_every_kind_of_request_to_loopback_fails_with_the_guard_on(world):
    probe, probe6, net, base = world["probe"], world["probe6"], world["net"], world["base"]
    limits = cap.Limits(page_seconds=20, idle_seconds=1.0)
    driver = cap.open_browser(limits, allow_private=True, upstream=net.url, resolver=_resolver)
    try:
        # 1. the policy lifted (what tests of other features run with): every probe really fires
        r = cap.capture(f"{base}/probe.html", driver=driver, limits=limits, allow_private=True)
        assert r.status == "ok", r.error
        fired = {line.rsplit(" ", 1)[0] for line in probe.seen}
        assert fired >= set(PROBES[:-1]), sorted(fired)
        assert any(s.startswith("GET /img6") for s in probe6.seen)
        probe.seen.clear()
        probe6.seen.clear()
        net.carried.clear()

        # 2. the guard on: nothing reaches a loopback probe; the public parts are captured
        r = cap.capture(f"{base}/probe.html", driver=driver, limits=limits, allow_private=False)
        assert r.status == "ok", r.error
        assert probe.seen == [] and probe6.seen == []
        assert f"{base}/ok.png" in {m["url"] for m in r.media}
        assert all(PUBLIC in c or "public.test" in c for c in net.carried), net.carried
        lo = f"http://127.0.0.1:{probe.port}"
        assert {f"{lo}/img", f"http://localhost:{probe.port}/img-localhost", f"{lo}/redirected",
                f"http://[::1]:{probe6.port}/img6", "http://intranet.test/private.png", f"{lo}/fetch",
                f"{lo}/worker", f"{lo}/segment.ts", f"127.0.0.1:{probe.port}"} <= set(r.blocked), r.blocked
        assert "/seg-redirect.ts" in world["hits"]          # the segment was asked for, its redirect refused

        # 3. a page that redirects to loopback: refused, with the reason
        r = cap.capture(f"{base}/go", driver=driver, limits=limits, allow_private=False)
        assert r.status == "error" and r.error.startswith("refused") and "loopback" in r.error, r.error
        assert probe.seen == []

        # 4. the guard down: the capture refuses to start, the site sees nothing
        hits = len(world["hits"])
        driver.kesu_guard.stop()
        r = cap.capture(f"{base}/probe.html", driver=driver, limits=limits, allow_private=False)
        assert (r.status, r.error) == ("error", cap.GUARD_DOWN)
        assert len(world["hits"]) == hits and probe.seen == []
    finally:
        driver.quit()
    with pytest.raises(BlockingIOError):                    # WebRTC's UDP (STUN) never went around the guard
        world["udp"].recv(2000)


def test_a_browser_without_a_guard_captures_nothing(world):
    driver = chromium.new_driver(sandbox=False)
    try:
        r = cap.capture(f"http://127.0.0.1:{world['probe'].port}/x", driver=driver, allow_private=True)
    finally:
        driver.quit()
    assert (r.status, r.error) == ("error", cap.GUARD_DOWN) and world["probe"].seen == []


def test_the_crawlers_chromium_runs_in_its_sandbox():
    """Its renderers sit in user namespaces of their own under seccomp-bpf, and, when kesu is
    root, every Chromium process runs as the unprivileged browser user (on b1ce246 it ran as
    root with --no-sandbox)."""
    import os
    import pwd

    chromium.sandbox_plan.cache_clear()
    plan = chromium.sandbox_plan()
    assert plan["sandbox"], f"this machine should give Chromium its sandbox: {plan['why']}"
    driver = cap.open_browser(allow_private=True)
    try:
        driver.get("data:text/html,<p>sandboxed</p>")
        # A renderer forked a moment ago gets its seccomp filter as it starts: wait for a settled
        # state (a condition), so one caught mid-start is not counted as unsandboxed.
        deadline = time.monotonic() + 10
        state = chromium.sandbox_state(driver)
        while state["sandboxed"] != state["renderers"] and time.monotonic() < deadline:
            time.sleep(0.1)
            state = chromium.sandbox_state(driver)
        pids = chromium.descendants(driver.service.process.pid) + [driver.service.process.pid]
        uids = set()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as fh:
                    uids.add(int(next(line for line in fh if line.startswith("Uid:")).split()[1]))
            except OSError:
                continue
        profile = driver.kesu_profile
    finally:
        driver.quit()
    assert state["renderers"] >= 1 and state["sandboxed"] == state["renderers"], state
    if os.geteuid() == 0:
        assert uids == {pwd.getpwnam(plan["user"]).pw_uid}, uids
        assert profile and not os.path.exists(profile)          # its profile folder went with it
