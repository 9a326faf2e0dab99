"""Many tiny generated sites for the patrol tests, each on its own loopback address (127.0.0.x).

Every site is a plain "uploads" site: a front page, a newest-first listing at /new with
pagination (`<a rel="next">`), item pages, and generated images (Pillow: coloured rectangles,
never anything else). Variants, chosen per site:

* validators: `etag` (If-None-Match answered with 304), `lastmod` (If-Modified-Since), or
  none (the patrol must fall back on content hashes);
* gates: `age` (a common age-gate overlay: the page is replaced by a gate until a button sets
  a cookie and reloads), `custom` (a gate only a configured selector finds), `cookie` (the
  content needs a cookie the domain's settings name; no button);
* `hang`: robots.txt answers, every page request is held open and never answered (a site
  that times out: the browser's navigation stays pending);
* robots.txt: some disallow /private, one disallows everything.

Each server counts what it sent (responses, bytes, full HTML pages), so a test measures the
patrol's cost from the sites' side, not from the patrol's own bookkeeping.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import random
import socketserver
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime

from PIL import Image, ImageDraw

PER_PAGE = 2


def make_image(seed: int, size=(160, 120), kind="PNG") -> bytes:
    """A plain generated picture: a background and coloured rectangles (distinct per seed)."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(14):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        draw.rectangle([x0, y0, x0 + rng.randrange(15, 80), y0 + rng.randrange(15, 60)],
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, format=kind, **({"quality": 88} if kind == "JPEG" else {}))
    return buf.getvalue()


@dataclass
class Counter:
    responses: int = 0
    bytes: int = 0
    pages: int = 0              # HTML documents sent whole (200)
    not_modified: int = 0
    images: int = 0

    def snapshot(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Site:
    index: int
    host: str
    validators: str | None = "etag"      # etag | lastmod | None
    gate: str | None = None              # age | custom | cookie | None
    hang: bool = False
    robots: str = "User-agent: *\nDisallow: /private\n"
    uploads: list = field(default_factory=list)       # [(name, bytes, mime)] newest first
    port: int = 0
    modified: float = field(default_factory=lambda: time.time() - 3600)
    count: Counter = field(default_factory=Counter)
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def domain(self) -> str:
        return f"site{self.index:02d}.test"

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def image_url(self, name: str) -> str:
        return f"{self.base}/img/{name}"

    def upload(self, name: str, body: bytes, mime: str = "image/png"):
        """A new upload: it goes on top of the newest-first listing."""
        self.uploads.insert(0, (name, body, mime))
        self.modified = time.time()

    # -- pages --
    def listing(self, page: int) -> str:
        items = self.uploads[(page - 1) * PER_PAGE: page * PER_PAGE]
        more = len(self.uploads) > page * PER_PAGE
        cells = "".join(f'<li><a href="/item/{n}"><img src="/img/{n}" alt="upload {n}" width="160" height="120"></a></li>'
                        for n, _, _ in items)
        nxt = f'<a rel="next" href="/new?page={page + 1}">next</a>' if more else ""
        return (f"<!doctype html><html><head><title>{self.domain} new {page}</title></head><body>"
                f"<h1>Newest uploads, page {page}</h1><ul>{cells}</ul><nav>{nxt}</nav></body></html>")

    def front(self) -> str:
        return (f"<!doctype html><html><head><title>{self.domain}</title></head><body><h1>{self.domain}</h1>"
                f'<p><a href="/new">newest</a> <a href="/private/x">private</a></p></body></html>')

    def item(self, name: str) -> str | None:
        if not any(n == name for n, _, _ in self.uploads):
            return None
        return f'<!doctype html><html><body><img src="/img/{name}" alt=""></body></html>'

    GATES = {
        "age": ('<div id="age-verification" class="age-gate"><p>This site is for adults only.</p>'
                '<button type="button">I am 18 or older / 18歳以上です</button></div>'
                "<script src=\"/gate.js\"></script>"),
        "custom": ('<div id="x-overlay"><p>Continue?</p><a href="#" id="go-in">→</a></div>'
                   "<script src=\"/gate.js\"></script>"),
        "cookie": "<p>Please enable cookies to continue.</p>",
    }
    GATE_JS = {
        "age": "document.querySelector('.age-gate button').addEventListener('click', () => {"
               " document.cookie = 'age_ok=1; path=/'; location.reload(); });",
        "custom": "document.getElementById('go-in').addEventListener('click', (e) => { e.preventDefault();"
                  " document.cookie = 'entered=1; path=/'; location.reload(); });",
    }
    GATE_COOKIE = {"age": "age_ok=1", "custom": "entered=1", "cookie": "adult=yes"}

    def passed_gate(self, cookie_header: str) -> bool:
        if not self.gate:
            return True
        return self.GATE_COOKIE[self.gate] in [c.strip() for c in (cookie_header or "").split(";")]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    site: Site = None

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        counter, raw = self.site.count, self.wfile

        class Counting:
            def write(self_, data):
                counter.bytes += len(data)
                return raw.write(data)

            def flush(self_):
                return raw.flush()
        self.wfile = Counting()

    def _send(self, code, body: bytes, ctype: str, headers=()):
        self.site.count.responses += 1
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, text: str):
        body = text.encode("utf-8")
        site = self.site
        headers = []
        if site.validators == "etag":
            tag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            headers.append(("ETag", tag))
            if self.headers.get("If-None-Match") == tag:
                site.count.not_modified += 1
                return self._send(304, b"", "text/html; charset=utf-8", headers)
        elif site.validators == "lastmod":
            headers.append(("Last-Modified", formatdate(int(site.modified), usegmt=True)))
            since = self.headers.get("If-Modified-Since")
            if since:
                try:
                    if int(site.modified) <= parsedate_to_datetime(since).timestamp():
                        site.count.not_modified += 1
                        return self._send(304, b"", "text/html; charset=utf-8", headers)
                except (TypeError, ValueError):
                    pass
        site.count.pages += 1
        self._send(200, body, "text/html; charset=utf-8", headers)

    def do_GET(self):
        site = self.site
        path, _, query = self.path.partition("?")
        if path == "/robots.txt":
            return self._send(200, site.robots.encode(), "text/plain")
        if site.hang:
            site.stopped.wait(300)          # never a byte back
            self.close_connection = True
            return
        if path == "/gate.js":
            return self._send(200, site.GATE_JS.get(site.gate, "").encode(), "text/javascript")
        if path.startswith("/img/"):
            name = path[5:]
            for n, body, mime in site.uploads:
                if n == name:
                    site.count.images += 1
                    return self._send(200, body, mime, [("ETag", '"' + hashlib.sha256(body).hexdigest()[:20] + '"')])
            return self._send(404, b"not found", "text/plain")
        if path in ("/", "/new") or path.startswith("/item/"):
            if not site.passed_gate(self.headers.get("Cookie", "")):
                site.count.pages += 1
                return self._send(200, ("<!doctype html><html><body>" + site.GATES[site.gate]
                                        + "</body></html>").encode(), "text/html; charset=utf-8")
            if path == "/":
                return self._html(site.front())
            if path == "/new":
                page = 1
                if query.startswith("page=") and query[5:].isdigit():
                    page = max(1, int(query[5:]))
                return self._html(site.listing(page))
            html = site.item(path[6:])
            if html is not None:
                return self._html(html)
        return self._send(404, b"<p>not found</p>", "text/html")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass


class Sites:
    """N sites on 127.0.0.2 ... 127.0.0.(N+1); `stop()` ends them all."""

    def __init__(self, sites: list[Site]):
        self.sites = sites
        self._servers = []
        for site in sites:
            handler = type(f"Site{site.index}", (_Handler,), {"site": site})
            server = _Server((site.host, 0), handler)
            site.port = server.server_address[1]
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
            self._servers.append(server)

    def __iter__(self):
        return iter(self.sites)

    def __getitem__(self, i) -> Site:
        return self.sites[i]

    def counts(self) -> dict:
        total = Counter()
        for s in self.sites:
            for k, v in s.count.snapshot().items():
                setattr(total, k, getattr(total, k) + v)
        return total.snapshot()

    def stop(self):
        for site in self.sites:
            site.stopped.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()


def build(n: int = 50, uploads: int = 4, seed: int = 1000, hang: tuple = (), gates: dict | None = None,
          no_validators: tuple = (), lastmod_every: int = 3) -> Sites:
    """n sites; site i lives on 127.0.0.(i+2). `gates` maps site index -> gate kind."""
    gates = gates or {}
    out = []
    for i in range(n):
        validators = None if i in no_validators else ("lastmod" if i % lastmod_every == 1 else "etag")
        site = Site(index=i, host=f"127.0.0.{i + 2}", validators=validators, gate=gates.get(i), hang=i in hang)
        if i == n - 1:
            site.robots = "User-agent: *\nDisallow: /\n"
        for k in range(uploads):
            site.uploads.append((f"u{i}-{k}.png", make_image(seed + i * 100 + k), "image/png"))
        out.append(site)
    return Sites(out)
