"""Shared by the intake browser and privacy tests: a real intake server (waitress, in a
thread on 127.0.0.1:0) over an instance in a temporary folder, a recorder of every request
body the server received, test media, axe-core and screenshots.
"""
import io
import logging
import os
import re
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import redis

from store.config import load
from store.instance import Instance

ROOT = Path(__file__).resolve().parents[1]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SAMPLES = ROOT / "node_modules" / "@vladmandic" / "face-api" / "demo"
# The README's screenshots are refreshed only when asked (KESU_UPDATE_SCREENSHOTS=1 make test);
# otherwise they go to a temporary folder, so a test run never changes tracked files.
SCREENSHOTS = (ROOT / "docs" / "screenshots" if os.environ.get("KESU_UPDATE_SCREENSHOTS")
               else Path(tempfile.gettempdir()) / "kesu-screenshots")
# Database 13 on the test Redis (KESU_TEST_REDIS_URL's server), so that jobs of other tests
# running at the same time never mix with the intake's.
REDIS_URL = re.sub(r"/\d*$", "", os.environ.get("KESU_TEST_REDIS_URL", "redis://127.0.0.1:6379/15").split("?")[0]) + "/13"


class Recorder:
    """WSGI middleware keeping (method, path, headers, body) of every request, for the scans.
    With remote_addr, every request comes from that address (a real client's, not loopback),
    so a scan for it finds what the app kept of request.remote_addr."""

    def __init__(self, app, remote_addr: str | None = None):
        self.app = app
        self.remote_addr = remote_addr
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        if self.remote_addr:
            environ["REMOTE_ADDR"] = self.remote_addr
        with self._lock:
            self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers, body))
        return self.app(environ, start_response)


class Portal:
    def __init__(self, folder: Path, remote_addr: str | None = None, **settings):
        self.settings = load(folder / "instance", redis_url=REDIS_URL, org_phone="03-0000-0000",
                             org_email="help@example.org", **settings)
        self.staff = Instance(self.settings)           # the worker side: holds the unlocked key
        self.staff.init("test passphrase")
        from intake import create_app
        self.app = create_app(Instance(self.settings))  # the intake side: never unlocked
        self.recorder = Recorder(self.app, remote_addr)
        self.log_file = self.settings.log_dir / "test.log"
        self._handler = logging.FileHandler(self.log_file, encoding="utf-8")
        self._handler.setLevel(logging.DEBUG)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        self._old_level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(self._handler)
        from waitress.server import create_server
        self.server = create_server(self.recorder, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self):
        self.server.close()
        root = logging.getLogger()
        root.removeHandler(self._handler)
        root.setLevel(self._old_level)
        self._handler.close()

    def run_worker(self) -> None:
        """Take in what the intake enqueued, with a real RQ worker in this process."""
        from rq import Queue, SimpleWorker

        from workers.system import context
        from workers.system.queue import connection
        context.set_instance(self.staff)
        conn = connection(self.settings)
        SimpleWorker([Queue("default", connection=conn)], connection=conn).work(burst=True, with_scheduler=False)


@contextmanager
def open_portal(folder: Path, **kwargs):
    """A Portal on an empty Redis database, emptied again afterwards."""
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    portal = Portal(folder, **kwargs)
    try:
        yield portal
    finally:
        portal.close()
        conn.flushdb()


def make_media(folder: Path) -> dict:
    """A generated photo, a second one for add-more, and a 3-second ffmpeg test video."""
    from PIL import Image, ImageDraw
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, seed in (("generated.jpg", 3), ("more.png", 7)):
        im = Image.new("RGB", (480, 360), (200, 220, 240))
        d = ImageDraw.Draw(im)
        for i in range(0, 480, 24):
            y = (i * seed) % 300
            d.rectangle([i, y, i + 40, y + 60], fill=((i * seed) % 255, (i * 5) % 255, (i * 11 * seed) % 255))
        im.save(folder / name)
        out[name] = folder / name
    video = folder / "clip.webm"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
                    "-t", "3", "-c:v", "libvpx", "-b:v", "300k", str(video)], check=True)
    out["clip.webm"] = video
    out["selfie"] = SAMPLES / "sample1.jpg"
    return out


def run_axe(driver) -> list[dict]:
    """Serious and critical axe-core violations on the current page."""
    driver.execute_script(AXE.read_text("utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => "
        "({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))),"
        " e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def phone_viewport(driver, width=390, height=844) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path
