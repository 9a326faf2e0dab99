"""The address guard: a forward proxy on loopback through which every connection kesu opens
to the web goes, so the address policy (workers.net.addresses) holds at the network level.

Chromium is started with `--proxy-server` pointing here and `--proxy-bypass-list=<-loopback>`
(Chromium otherwise sends loopback around its proxy), so whatever a page does (images,
fetch, WebSockets, workers, redirects, `Network.loadNetworkResource`) reaches the network
only as a request to this proxy; workers.net.fetch sends kesu's own requests here too. For
each connection the guard resolves the name itself, checks every address, and connects to
an address it checked (a name cannot resolve one way for the check and another for the
connection). Plain HTTP arrives in absolute form, everything else (HTTPS, WebSockets) as
CONNECT; a redirect is a new request, so it is checked like the first.

With the organisation's `crawl_proxy`, the guard chains to it: tunnels go there as
`CONNECT <checked address>:<port>` (pinned), plain HTTP as the absolute URL (that proxy
resolves the name again, from its own network). Only `http://` crawl proxies are supported.

A refused plain-HTTP request from the browser gets no answer at all (the connection closes:
Chromium records a network error, never a response the site did not send); a refused
CONNECT gets 403 with the reason. With `explain_refusals` (kesu's own fetcher) plain HTTP
gets 403 with `X-Kesu-Guard: refused` so the fetcher can tell a refusal from the site's 403.
"""
from __future__ import annotations

import base64
import logging
import selectors
import socket
import socketserver
import threading
from urllib.parse import unquote, urlsplit

from workers.net.addresses import Refused, checked_addresses, resolve

log = logging.getLogger("kesu.guard")

REFUSED_REASON = "Refused by kesu address guard"
MAX_HEAD = 64 * 1024
HOP_BY_HOP = (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive")


class GuardDown(RuntimeError):
    """The guard is not running: nothing may be fetched."""


class Guard:
    """One guard proxy, on 127.0.0.1 and a free port. `start()` it, point clients at `url`."""

    def __init__(self, allow_private: bool = False, upstream: str = "", resolver=resolve,
                 explain_refusals: bool = False, connect_timeout: float = 10.0, idle_timeout: float = 120.0):
        self.allow_private = allow_private
        self.resolver = resolver
        self.explain_refusals = explain_refusals
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.upstream = _parse_upstream(upstream) if upstream else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._refused: list[tuple[int, str, str]] = []     # (sequence, target, reason), the last 1000
        self._seq = 0

    # -- life --
    def start(self) -> Guard:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.guard = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="kesu-address-guard")
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise GuardDown("the address guard is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> bool:
        """Running and accepting connections (checked with a real connection)."""
        if self._server is None or self._thread is None or not self._thread.is_alive():
            return False
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            return True
        except OSError:
            return False

    def chromium_args(self) -> list[str]:
        """Everything Chromium sends goes through the guard, loopback included; WebRTC may not
        send UDP around it (its TCP, like TURN over TCP, goes through the guard as CONNECT)."""
        return [f"--proxy-server={self.url}", "--proxy-bypass-list=<-loopback>",
                "--webrtc-ip-handling-policy=disable_non_proxied_udp"]

    # -- what was refused --
    def mark(self) -> int:
        with self._lock:
            return self._seq

    def refused_since(self, mark: int) -> list[tuple[str, str]]:
        """(target, reason) refused after `mark()`: a URL for plain HTTP, host:port for a tunnel."""
        with self._lock:
            return [(t, r) for seq, t, r in self._refused if seq > mark]

    def note_refusal(self, target: str, reason: str) -> None:
        with self._lock:
            self._seq += 1
            self._refused.append((self._seq, target, reason))
            del self._refused[:-1000]
        log.info("address guard refused a connection: %s", reason)

    # -- connecting --
    def check_url(self, url: str) -> list[str]:
        """The checked addresses of a URL's host, or Refused (the same rule as every connection)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss"):
            raise Refused(f"scheme {parts.scheme or '?'} not fetched")
        return checked_addresses(parts.hostname or "", self.allow_private, self.resolver)

    def connect(self, host: str, port: int, tunnel: bool) -> tuple[socket.socket, bytes]:
        """A socket to a checked address of host:port, directly or through the crawl proxy
        (for a tunnel: CONNECT there; else a socket to the crawl proxy itself). Raises Refused."""
        ips = checked_addresses(host, self.allow_private, self.resolver)
        if self.upstream is None:
            return _connect_first(ips, port, self.connect_timeout), b""
        sock = socket.create_connection(self.upstream[:2], timeout=self.connect_timeout)
        if not tunnel:
            return sock, b""
        target = f"[{ips[0]}]:{port}" if ":" in ips[0] else f"{ips[0]}:{port}"
        auth = f"Proxy-Authorization: {self.upstream[2]}\r\n" if self.upstream[2] else ""
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode("latin-1"))
        head, rest = _read_head(sock)
        status = _status(head)
        if status is None or status // 100 != 2:
            sock.close()
            raise OSError(f"the crawl proxy answered {status} to CONNECT")
        return sock, rest


def _parse_upstream(url: str) -> tuple[str, int, str | None]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"crawl_proxy must be an http:// proxy, got {parts.scheme}://")
    auth = None
    if parts.username:
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(cred).decode()
    return parts.hostname, parts.port or 8080, auth


def _connect_first(ips: list[str], port: int, timeout: float) -> socket.socket:
    last: OSError | None = None
    for ip in ips:
        try:
            return socket.create_connection((ip, port), timeout=timeout)
        except OSError as exc:
            last = exc
    raise last or OSError("no address")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """An HTTP head (up to the blank line) and whatever arrived after it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise OSError("head too large")
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("closed before a full head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def _status(head: bytes) -> int | None:
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _split_hostport(target: str, default: int) -> tuple[str, int]:
    """host:port of a CONNECT ("[::1]:443", "example.org:443", and Python 3.11's "::1:443")."""
    if target.startswith("["):
        host, _, port = target[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            host, port = target, ""
    return host, int(port) if port.isdigit() else default


def _rewrite_headers(head: bytes, extra: list[bytes]) -> bytes:
    """Drop hop-by-hop headers (keeping an Upgrade's Connection), add `extra`."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    upgrade = any(line.lower().startswith(b"upgrade:") for line in lines[1:])
    kept = [lines[0]]
    for line in lines[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in HOP_BY_HOP and not (upgrade and name == b"connection"):
            continue
        kept.append(line)
    if not upgrade:
        kept.append(b"Connection: close")
    return b"\r\n".join(kept + extra) + b"\r\n\r\n"


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    guard: Guard


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        guard: Guard = self.server.guard
        client: socket.socket = self.request
        client.settimeout(guard.idle_timeout)
        try:
            head, rest = _read_head(client)
        except OSError:
            return
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        if method == "CONNECT":
            self._tunnel(guard, client, target, rest)
        else:
            self._forward(guard, client, head, method, target, rest)

    def _tunnel(self, guard: Guard, client, target: str, rest: bytes):
        host, port = _split_hostport(target, 443)
        try:
            upstream, early = guard.connect(host, port, tunnel=True)
        except Refused as exc:
            guard.note_refusal(f"{host}:{port}", str(exc))
            client.sendall(f"HTTP/1.1 403 {REFUSED_REASON}: {exc}\r\nContent-Length: 0\r\n"
                           "Connection: close\r\n\r\n".encode("latin-1", "replace"))
            return
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n" + early)
            if rest:
                upstream.sendall(rest)
            _relay(client, upstream, guard.idle_timeout)

    def _forward(self, guard: Guard, client, head: bytes, method: str, target: str, rest: bytes):
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        try:
            upstream, _ = guard.connect(parts.hostname, parts.port or 80, tunnel=False)
        except Refused as exc:
            guard.note_refusal(target.split("#", 1)[0], str(exc))
            if guard.explain_refusals:
                body = f"{REFUSED_REASON}: {exc}".encode("utf-8", "replace")
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nX-Kesu-Guard: refused\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            return                                  # the browser: no answer at all, a network error
        except OSError as exc:
            if guard.explain_refusals:
                body = f"no connection: {type(exc).__name__}: {str(exc)[:200]}".encode("utf-8", "replace")
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nX-Kesu-Guard: unreachable\r\n"
                               + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            return                                  # the browser: a network error, as without a proxy
        first, _, headers = head.partition(b"\r\n")
        if guard.upstream is None:                  # origin form to the site itself
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            first = f"{method} {path} HTTP/1.1".encode("latin-1")
            extra = []
        else:                                       # absolute form to the crawl proxy
            extra = [f"Proxy-Authorization: {guard.upstream[2]}".encode()] if guard.upstream[2] else []
        with upstream:
            upstream.sendall(_rewrite_headers(first + b"\r\n" + headers, extra) + rest)
            _relay(client, upstream, guard.idle_timeout, close_after_response=True)


def _relay(client: socket.socket, upstream: socket.socket, idle: float, close_after_response: bool = False):
    """Copy bytes both ways until the far side is done. For plain HTTP the response head is
    rewritten to `Connection: close`, so the client never reuses a connection we end."""
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, upstream)
    sel.register(upstream, selectors.EVENT_READ, client)
    pending = b"" if close_after_response else None      # response head being collected
    try:
        while True:
            events = sel.select(timeout=idle)
            if not events:
                return                                    # idle too long
            for key, _ in events:
                src: socket.socket = key.fileobj          # type: ignore[assignment]
                dst: socket.socket = key.data
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if not data:
                    if src is upstream:
                        if pending:
                            dst.sendall(pending)
                        return
                    sel.unregister(client)                # the client is done sending; keep reading
                    try:
                        upstream.shutdown(socket.SHUT_WR)
                    except OSError:
                        return
                    continue
                if src is upstream and pending is not None:
                    pending += data
                    if b"\r\n\r\n" not in pending:
                        if len(pending) > MAX_HEAD:
                            return
                        continue
                    head, body = pending.split(b"\r\n\r\n", 1)
                    data = _rewrite_headers(head + b"\r\n\r\n", [b"Proxy-Connection: close"]) + body \
                        if _status(head) != 101 else pending
                    pending = None
                dst.sendall(data)
    except OSError:
        return
    finally:
        sel.close()
