"""Loopback servers for the address-guard tests.

`Probe`: a TCP server that records the first line of every connection it receives (an
image, a fetch, a WebSocket handshake) and answers a tiny 200; the guard works when it
records nothing.

`FakeInternet`: an upstream forward proxy (what an organisation's `crawl_proxy` would be)
that maps a few "public" names and addresses to loopback ports, so a test page can be
"public" while its probes aim at loopback. It connects to loopback ONLY and refuses
everything else, so nothing a test does ever leaves this machine.
"""
from __future__ import annotations

import select
import socket
import socketserver
import threading
from urllib.parse import urlsplit


class _Threaded(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Probe:
    def __init__(self, host: str = "127.0.0.1"):
        self.seen: list[str] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        probe = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline(4096).decode("latin-1").strip()
                probe.seen.append(line or "<connection>")
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                                 b"Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\nprobe")

        server_cls = type("S", (_Threaded,), {"address_family": family})
        self.server = server_cls((host, 0), Handler)
        self.host, self.port = host, self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _pipe(a: socket.socket, b: socket.socket):
    socks = [a, b]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [], 30)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return


class FakeInternet:
    """An upstream proxy: `routes` maps "name-or-ip:port" -> a loopback port, or a (loopback
    address, port) pair. It records what it carried (`carried`: absolute URLs and CONNECT targets)."""

    def __init__(self, routes: dict[str, int | tuple[str, int]]):
        self.routes = routes
        self.carried: list[str] = []
        self.auth: list[str] = []                 # Proxy-Authorization values received
        net = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline(8192).decode("latin-1")
                if not line:
                    return
                method, target, _ = line.split(" ", 2)
                headers = []
                while True:
                    h = self.rfile.readline(8192)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    if h.lower().startswith(b"proxy-authorization:"):
                        net.auth.append(h.split(b":", 1)[1].strip().decode("latin-1"))
                    if not h.lower().startswith((b"proxy-", b"connection")):
                        headers.append(h)
                net.carried.append(f"CONNECT {target}" if method == "CONNECT" else target)
                if method == "CONNECT":
                    route = net.routes.get(target.replace("[", "").replace("]", ""))
                else:
                    parts = urlsplit(target)
                    route = net.routes.get(f"{parts.hostname}:{parts.port or 80}")
                if isinstance(route, int):
                    route = ("127.0.0.1", route)
                if route is None or route[0] not in ("127.0.0.1", "::1"):   # not on our fake internet: never dialled
                    self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    return
                up = socket.create_connection(route, timeout=10)
                with up:
                    if method == "CONNECT":
                        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        self.wfile.flush()
                    else:
                        parts = urlsplit(target)
                        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                        up.sendall(f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(headers)
                                   + b"Connection: close\r\n\r\n")
                    _pipe(self.connection, up)

        self.server = _Threaded(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
