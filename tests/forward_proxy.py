"""A minimal forward proxy on a loopback address, for tests of `crawl_proxy`."""
import socket
import socketserver


class ForwardProxy(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A minimal forward proxy for plain HTTP (absolute-URI requests): it counts what it carries."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host):
        self.seen = []
        super().__init__((host, 0), self._Handler)

    class _Handler(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline().decode("latin-1")
            if not line:
                return
            method, url, _ = line.split(" ", 2)
            headers = []
            while True:
                h = self.rfile.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                if not h.lower().startswith((b"proxy-", b"connection")):
                    headers.append(h)
            self.server.seen.append(url)
            if method == "CONNECT" or "://" not in url:     # TLS tunnels: not needed for these sites
                self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            hostport, _, path = url.split("://", 1)[1].partition("/")
            host, _, port = hostport.partition(":")
            try:
                up = socket.create_connection((host, int(port or 80)), timeout=10)
            except OSError:                                   # a name the closed test network cannot resolve
                self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with up:
                up.sendall(f"{method} /{path} HTTP/1.0\r\n".encode() + b"".join(headers) + b"Connection: close\r\n\r\n")
                while True:
                    chunk = up.recv(65536)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
