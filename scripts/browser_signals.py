#!/usr/bin/env python3
"""Signals of local image files as the victim's browser computes them, in headless Chromium.

    .venv/bin/python scripts/browser_signals.py FILE...        one JSON line per file:
    {"file", "faces": [{"box", "descriptor": [128]}], "pdq": [...], "sha256", "md5", "error"}

Serves /static/ (intake/static) and this folder's harness page from a loopback server, runs
the intake modules (faces.js, and photo.js when it exists) in Debian's Chromium through
Selenium, and reads back what they computed. Nothing goes anywhere but 127.0.0.1.

As a library: `browser_signals(paths)` returns the list of dicts (pass `driver=` to reuse a
Selenium driver you already have).
"""
from __future__ import annotations

import http.server
import json
import mimetypes
import socketserver
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "intake" / "static"
HARNESS = Path(__file__).resolve().parent / "harness"
PAGE = "/harness/signals.html"

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/wasm", ".wasm")


class _Handler(http.server.SimpleHTTPRequestHandler):
    roots: dict = {}
    files: dict = {}

    def translate_path(self, path):
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path.startswith("/files/"):
            return str(self.files.get(path[len("/files/"):], "/nonexistent"))
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                root = Path(root).resolve()
                target = (root / path[len(prefix):].lstrip("/")).resolve()
                if root in target.parents or target == root:
                    return str(target)
        return "/nonexistent"

    def guess_type(self, path):
        if path in self.files.values():
            return "application/octet-stream"
        return super().guess_type(path)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def serve(paths):
    """A loopback server for /static/, /harness/ and /files/<n> (the n-th of `paths`)."""
    files = {str(i): Path(p).resolve() for i, p in enumerate(paths)}
    handler = type("H", (_Handler,), {"roots": {"/static/": STATIC, "/harness/": HARNESS}, "files": files})
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make_driver(width=1280, height=900):
    """Headless Debian Chromium through Selenium, offline."""
    from workers.capture.chromium import new_driver
    return new_driver(width, height, script_timeout=600)


def _wait(driver, condition, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(f"return ({condition});"))


_CALL = ("const done = arguments[arguments.length - 1];"
         "window.signalsUrl(arguments[0], {faces: arguments[1]}).then(done, e => done({faces: [], pdq: [], sha256: null,"
         " md5: null, error: String(e && e.message || e)}));")


def browser_signals(paths, driver=None, faces=True) -> list[dict]:
    """One dict per file: {"file", "faces", "pdq", "sha256", "md5", "error"} (faces=False:
    PDQ and file hashes only)."""
    paths = [str(p) for p in paths]
    own = driver is None
    if own:
        driver = make_driver()
    results = []
    try:
        with serve(paths) as base:
            driver.get(base + PAGE)
            _wait(driver, "window.harnessReady || window.harnessError")
            error = driver.execute_script("return window.harnessError || null;")
            if error:
                raise RuntimeError(f"the harness page failed to load: {error}")
            for i, path in enumerate(paths):
                if not Path(path).is_file():
                    results.append({"file": path, "faces": [], "pdq": [], "sha256": None, "md5": None,
                                    "error": "not a readable file"})
                    continue
                got = driver.execute_async_script(_CALL, f"/files/{i}", bool(faces))
                results.append({"file": path, "faces": got.get("faces", []), "pdq": got.get("pdq", []),
                                "sha256": got.get("sha256"), "md5": got.get("md5"), "error": got.get("error")})
    finally:
        if own:
            driver.quit()
    return results


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if args else 2
    for row in browser_signals(args):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
