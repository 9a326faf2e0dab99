"""The address policy, the guard proxy and the one outbound fetcher (workers.net), with the
policy ON (allow_private=False) against loopback probes: nothing may reach them."""
import http.server
import socket
import threading

import pytest
from net_helpers import FakeInternet, Probe

from workers.net import addresses
from workers.net.fetch import Fetcher, FetchError, Refused
from workers.net.guard import Guard

PUBLIC = "93.184.216.34"           # what "public.test" resolves to for the guard (never dialled: see FakeInternet)


def test_policy_refuses_every_non_global_address():
    refused = ["127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "100.127.255.254",
               "169.254.169.254", "0.0.0.0", "255.255.255.255", "224.0.0.1", "239.1.1.1", "240.0.0.1",
               "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
               "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12::1", "fec0::1", "ff02::1", "ff0e::1",
               "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "::10.0.0.1",
               "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::6440:1", "64:ff9b:1::1",
               "2002:7f00:1::", "2002:a00:1::1", "2001:db8::1", "2001::1", "100::1", "3fff::1", "not an ip"]
    allowed = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001::200e",
               "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::1"]
    assert [ip for ip in refused if addresses.refusal(ip) is None] == []
    assert [ip for ip in allowed if addresses.refusal(ip) is not None] == []
    with pytest.raises(addresses.Refused):
        addresses.checked_addresses("mixed.test", False, lambda h: [PUBLIC, "10.0.0.1"])   # one bad address: refused whole
    assert addresses.checked_addresses("mixed.test", True, lambda h: ["10.0.0.1"]) == ["10.0.0.1"]


class _Site(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def site():
    handler = type("H", (_Site,), {"routes": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.routes = handler.routes
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def probe():
    p = Probe()
    yield p
    p.stop()


def test_fetcher_refuses_loopback_and_private_hosts(probe, site):
    site.routes["/"] = (200, {}, b"hello")
    fetcher = Fetcher(allow_private=False)
    for url in (f"http://{probe.netloc}/x", f"http://localhost:{probe.port}/x", f"https://{probe.netloc}/x",
                f"http://127.1:{probe.port}/x", f"http://0x7f000001:{probe.port}/x"):
        with pytest.raises(Refused):
            fetcher.get(url, timeout=5)
    private = Fetcher(allow_private=False, resolver=lambda host: ["10.1.2.3"])   # refused before any connection
    with pytest.raises(Refused, match="private"):
        private.get("http://intranet.test/", timeout=5)
    cgnat = Fetcher(allow_private=False, resolver=lambda host: ["100.64.0.1"])
    with pytest.raises(Refused, match="carrier-grade"):
        cgnat.get("http://cgnat.test/", timeout=5)
    assert probe.seen == []
    # allowed (the tests' setting): the same path reaches the site, redirects followed
    site.routes["/r"] = (302, {"Location": "/"}, b"")
    r = Fetcher(allow_private=True).get(site.base + "/r", max_bytes=3)
    assert (r.status, r.body, r.truncated, r.final_url) == (200, b"hel", True, site.base + "/")
    assert r.redirects == [(site.base + "/r", 302, site.base + "/")]
    assert Fetcher(allow_private=True).get(site.base + "/missing").status == 404
    with pytest.raises(FetchError) as exc:
        Fetcher(allow_private=True).get("http://127.0.0.1:9/", timeout=5)          # nothing listens: no answer
    assert not isinstance(exc.value, Refused)


def test_redirect_to_loopback_is_refused_through_the_crawl_proxy(probe, site):
    """A public site (through the organisation's proxy) redirects to 127.0.0.1: the hop is refused."""
    site.routes["/page"] = (200, {}, b"public page")
    site.routes["/away"] = (302, {"Location": f"http://{probe.netloc}/secret"}, b"")
    site.routes["/away6"] = (301, {"Location": f"http://[::1]:{probe.port}/secret"}, b"")
    net = FakeInternet({f"public.test:{site.server_address[1]}": site.server_address[1],
                        f"{PUBLIC}:{site.server_address[1]}": site.server_address[1]})
    try:
        fetcher = Fetcher(allow_private=False, upstream=net.url,
                          resolver=lambda host: [PUBLIC] if host == "public.test" else addresses.resolve(host))
        base = f"http://public.test:{site.server_address[1]}"
        assert fetcher.get(base + "/page").body == b"public page"
        for path in ("/away", "/away6"):
            with pytest.raises(Refused, match="loopback"):
                fetcher.get(base + path)
        assert probe.seen == []
        assert net.carried == [base + "/page", base + "/away", base + "/away6"]   # the refused hops never left
        # a crawl proxy with credentials gets them, on plain HTTP and on tunnels (pinned to the checked address)
        upstream = net.url.replace("http://", "http://kesu:s%40cret@")
        authed = Fetcher(allow_private=False, upstream=upstream,
                         resolver=lambda host: [PUBLIC] if host == "public.test" else addresses.resolve(host))
        assert authed.get(base + "/page").body == b"public page"
        guard = Guard(allow_private=False, upstream=upstream, resolver=authed.resolver).start()
        try:
            sock, _ = guard.connect("public.test", site.server_address[1], tunnel=True)
            sock.close()
        finally:
            guard.stop()
        assert net.carried[-1] == f"CONNECT {PUBLIC}:{site.server_address[1]}"
        assert net.auth == ["Basic a2VzdTpzQGNyZXQ="] * 2                      # kesu:s@cret
    finally:
        net.stop()


def test_guard_tunnels_are_checked(probe):
    """CONNECT (HTTPS, WebSockets) to loopback gets 403 from the guard; the probe sees nothing."""
    guard = Guard(allow_private=False).start()
    try:
        for target in (probe.netloc, f"localhost:{probe.port}", f"[::ffff:127.0.0.1]:{probe.port}",
                       f"[64:ff9b::7f00:1]:{probe.port}"):
            with socket.create_connection(("127.0.0.1", guard.port), timeout=5) as s:
                s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
                assert s.recv(200).startswith(b"HTTP/1.1 403 Refused by kesu address guard"), target
        assert probe.seen == [] and len(guard.refused_since(0)) == 4
        assert guard.up()
    finally:
        guard.stop()
    assert not guard.up()


def test_contact_lookups_go_through_the_guard(probe):
    """security.txt and RDAP lookups used plain urlopen (no address check, redirects followed)."""
    from workers.takedown import contacts
    with pytest.raises(Refused):
        contacts.http_fetch(f"http://{probe.netloc}/.well-known/security.txt")
    found = contacts.find_contacts(probe.netloc.replace("127.0.0.1", "localhost"), resolve=lambda host: "127.0.0.1")
    assert found == {} and probe.seen == []


def test_a_server_dripping_bytes_cannot_hold_a_fetch():
    """Each read has `timeout`; the whole request TOTAL_TIMEOUTS of them (a re-check or a patrol
    probe would otherwise wait on a hostile server for ever)."""
    import time

    from workers.net import fetch as fetch_module

    stop = threading.Event()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def drip():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while not stop.wait(0.1):
            try:
                conn.sendall(b"x")
            except OSError:
                break
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="too long"):
            Fetcher(allow_private=True).get(f"http://127.0.0.1:{server.getsockname()[1]}/", timeout=0.5)
    finally:
        stop.set()
        server.close()
    assert time.monotonic() - started < fetch_module.TOTAL_TIMEOUTS * 0.5 + 1.5
