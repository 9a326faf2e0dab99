"""A generated fixture site for crawler tests, served on 127.0.0.1 by the test itself.

Plain pages with generated images (Pillow) and videos (ffmpeg): lazy images far below the
fold, srcset, <picture>, CSS backgrounds (inline and from a stylesheet), a data: image, a
cross-site iframe (served as `localhost`), an image a script adds after a delay, a
progressive mp4 (the server answers ranges, as real ones do), an HLS stream whose "player"
loads only the first segment, a redirect chain; and hostile pages: a redirect loop,
infinite scroll, a document that never finishes, an image that never finishes, an endless
video, broken images, javascript: and data: links, alert() dialogs, a 404.

`build_site(folder)` writes the files once and returns {path: sha256} of every media file;
`serve_site(folder)` starts the server and returns (base_url, stop).
"""
import hashlib
import http.server
import os
import random
import re
import socketserver
import subprocess
import threading
import time
from pathlib import Path

from PIL import Image, ImageDraw

IMAGES = {
    "img/a.png": ("PNG", (240, 160), 1),
    "img/s1.png": ("PNG", (200, 140), 2),
    "img/s2.png": ("PNG", (400, 280), 3),
    "img/p.webp": ("WEBP", (220, 150), 4),
    "img/p-fallback.png": ("PNG", (220, 150), 5),
    "img/bg.png": ("PNG", (300, 120), 6),
    "img/bg2.jpg": ("JPEG", (300, 120), 7),
    "img/f.png": ("PNG", (180, 180), 8),
    "img/lazy1.png": ("PNG", (260, 180), 9),
    "img/lazy2.jpg": ("JPEG", (260, 180), 10),
    "img/late.png": ("PNG", (210, 170), 11),
    "img/index.png": ("PNG", (120, 90), 12),
    "img/hang-ok.png": ("PNG", (100, 100), 13),
}

# What a browser at 1x loads for each page (srcset's 2x candidate and the <picture> fallback are not).
EXPECTED = {
    "gallery.html": ["img/a.png", "img/s1.png", "img/p.webp", "img/bg.png", "img/bg2.jpg", "img/f.png",
                     "img/lazy1.png", "img/lazy2.jpg", "img/late.png"],
    "video.html": ["media/clip.mp4"],
    "hls.html": ["media/hls/index.m3u8", "media/hls/seg000.ts", "media/hls/seg001.ts", "media/hls/seg002.ts"],
    "index.html": ["img/index.png"],
}

DATA_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAP8AAAAAACH5BAAAAAAALAAAAAABAAEAAAICRAEAOw=="


def _image(kind, size, seed) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(10, 90), y0 + rng.randrange(10, 90)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.text((8, 8), f"fixture {seed}", fill=(0, 0, 0))
    import io
    buf = io.BytesIO()
    img.save(buf, format=kind, **({"quality": 90} if kind == "JPEG" else {}))
    return buf.getvalue()


PAGES = {
    "index.html": """<!doctype html><html><head><title>fixture index</title></head><body>
<h1>Fixture site</h1><img src="img/index.png" alt="">
<ul>
<li><a href="gallery.html">gallery</a></li>
<li><a href="video.html#top">video</a></li>
<li><a href="hls.html">stream</a></li>
<li><a href="javascript:alert(1)">script link</a></li>
<li><a href="data:text/html,<b>hi</b>">data link</a></li>
<li><a href="http://example.invalid/elsewhere">another site</a></li>
<li><a href="mailto:someone@example.invalid">mail</a></li>
</ul></body></html>""",
    "gallery.html": """<!doctype html><html><head><title>gallery</title><link rel="stylesheet" href="style.css"></head><body>
<h1>Gallery</h1>
<img src="img/a.png" alt="a">
<img srcset="img/s1.png 1x, img/s2.png 2x" src="img/s1.png" alt="s">
<picture><source srcset="img/p.webp" type="image/webp"><img src="img/p-fallback.png" alt="p"></picture>
<div style="width:300px;height:120px;background-image:url('img/bg.png')"></div>
<div class="bg2"></div>
<img src="DATA_GIF" alt="dot">
<iframe src="FRAME_URL" width="300" height="220"></iframe>
<div style="height:5000px">tall</div>
<img loading="lazy" src="img/lazy1.png" alt="lazy one">
<div style="height:4000px">taller</div>
<img class="js-lazy" data-src="img/lazy2.jpg" alt="lazy two" width="260" height="180">
<div id="late"></div>
<script>
const io = new IntersectionObserver((entries) => {
  for (const e of entries) if (e.isIntersecting) { e.target.src = e.target.dataset.src; io.unobserve(e.target); }
});
document.querySelectorAll('img.js-lazy').forEach((el) => io.observe(el));
setTimeout(() => { const i = new Image(); i.src = 'img/late.png'; document.getElementById('late').appendChild(i); }, 600);
</script>
</body></html>""".replace("DATA_GIF", DATA_GIF),
    "frame.html": """<!doctype html><html><body><p>framed</p><img src="img/f.png" alt="f"></body></html>""",
    "video.html": """<!doctype html><html><body><h1 id="top">Video</h1>
<video src="media/clip.mp4" preload="auto" muted autoplay playsinline width="320"></video></body></html>""",
    "hls.html": """<!doctype html><html><body><h1>Stream</h1><script>
// a tiny "player": it loads the playlist and the first segment only, like a player that has just started
fetch('media/hls/index.m3u8').then(r => r.text()).then(t => {
  const first = t.split('\\n').find(l => l && !l.startsWith('#'));
  return fetch('media/hls/' + first).then(r => r.arrayBuffer());
}).then(() => { document.body.dataset.ready = '1'; });
</script></body></html>""",
    "landing.html": """<!doctype html><html><body><p>landed after redirects</p></body></html>""",
    "scroll.html": """<!doctype html><html><body><h1>Endless</h1><div id="feed"></div><script>
let n = 0;
function more() { for (let i = 0; i < 5; i++) { const d = document.createElement('div');
  d.style.height = '600px'; d.textContent = 'item ' + (n++); document.getElementById('feed').appendChild(d); } }
more();
window.addEventListener('scroll', () => { if (window.scrollY + window.innerHeight > document.body.scrollHeight - 800) more(); });
</script></body></html>""",
    "hangimg.html": """<!doctype html><html><body><p>one image never finishes</p>
<img src="img/hang-ok.png"><img src="/hang-image.png"></body></html>""",
    "huge.html": """<!doctype html><html><body><p>an endless video</p>
<video src="/huge.mp4" preload="auto" muted autoplay></video></body></html>""",
    "broken.html": """<!doctype html><html><body><p>broken things</p>
<img src="img/garbage.png"><img src="img/truncated.png"><img src="img/missing.png">
<a href="javascript:void(0)">js</a><a href="data:text/html,hello">data</a>
<a href="broken.html#again">self</a>
<script>alert('a dialog'); confirm('another one?');</script></body></html>""",
}

STYLE = ".bg2 { width: 300px; height: 120px; background: url(img/bg2.jpg) no-repeat; }\n"


def build_site(folder: Path) -> dict:
    """Write the site into `folder` (once) and return {path: sha256} of its media files."""
    folder = Path(folder)
    stamp = folder / ".built"
    if not stamp.exists():
        (folder / "img").mkdir(parents=True, exist_ok=True)
        (folder / "media" / "hls").mkdir(parents=True, exist_ok=True)
        for path, (kind, size, seed) in IMAGES.items():
            (folder / path).write_bytes(_image(kind, size, seed))
        (folder / "img/garbage.png").write_bytes(b"this is not a png at all" * 10)
        (folder / "img/truncated.png").write_bytes(_image("PNG", (200, 200), 99)[:300])
        for name, html in PAGES.items():
            (folder / name).write_text(html, "utf-8")
        (folder / "style.css").write_text(STYLE, "utf-8")
        ff = ["ffmpeg", "-loglevel", "error", "-y"]
        subprocess.run([*ff, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-t", "3",
                        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "10", "-movflags", "+faststart",
                        str(folder / "media/clip.mp4")], check=True)
        subprocess.run([*ff, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-t", "3",
                        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "10", "-f", "hls", "-hls_time", "1",
                        "-hls_list_size", "0", "-hls_segment_filename", str(folder / "media/hls/seg%03d.ts"),
                        str(folder / "media/hls/index.m3u8")], check=True)
        stamp.write_text("ok")
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".png", ".jpg", ".webp", ".mp4", ".ts", ".m3u8", ".gif"):
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stop: threading.Event = None
    frame_base: str = ""

    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _redirect(self, code, location):
        self.send_response(code)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _hold(self, seconds=120):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stop.is_set():
            time.sleep(0.1)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        m = re.fullmatch(r"/redirect/(\d)", path)
        if m:
            n = int(m.group(1))
            return self._redirect(302 if n != 2 else 301, f"/redirect/{n + 1}" if n < 3 else "/landing.html")
        if path in ("/loop/a", "/loop/b"):
            return self._redirect(302, "/loop/b" if path == "/loop/a" else "/loop/a")
        if path == "/gallery.html":
            body = Path(self.directory, "gallery.html").read_text("utf-8").replace("FRAME_URL", self.frame_base + "/frame.html")
            return self._send(body.encode(), "text/html; charset=utf-8")
        if path == "/hang":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"<!doctype html><html><body><p>this document never finishes</p>")
            self.wfile.flush()
            self._hold()
            return
        if path == "/hang-image.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "500000")
            self.end_headers()
            self.wfile.write(b"\x89PNG\r\n\x1a\n")
            self.wfile.flush()
            self._hold()
            return
        if path == "/huge.mp4":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(8 * 1024 ** 3))
            self.end_headers()
            chunk = os.urandom(256 * 1024)
            try:
                for _ in range(32 * 1024):
                    if self.stop.is_set():
                        return
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            return
        if path == "/notfound":
            return self._send(b"<p>gone</p>", "text/html", 404)
        return self._static(path)

    def _send(self, body: bytes, ctype: str, code=200):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _static(self, path):
        target = Path(self.translate_path(path))
        if not target.is_file():
            return self._send(b"not found", "text/plain", 404)
        data = target.read_bytes()
        ctype = self.guess_type(str(target))
        if target.suffix == ".m3u8":
            ctype = "application/vnd.apple.mpegurl"
        elif target.suffix == ".ts":
            ctype = "video/mp2t"
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and data:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            part = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Type", ctype)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def handle_error(self, request, client_address):
        # a browser that drops a connection (a media range it no longer wants) is normal here
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def serve_site(folder: Path):
    """Serve `folder` on 127.0.0.1; returns (base_url, stop). The iframe comes from `localhost`."""
    stop = threading.Event()
    handler = type("SiteHandler", (_Handler,), {"stop": stop})
    server = _Server(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(folder), **k))
    port = server.server_address[1]
    handler.frame_base = f"http://localhost:{port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def shutdown():
        stop.set()
        server.shutdown()
        server.server_close()
    return f"http://127.0.0.1:{port}", shutdown
