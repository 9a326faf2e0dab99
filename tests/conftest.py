"""Shared fixtures: instances on SQLite and PostgreSQL, real Redis, real headless Chromium.

Nothing here is mocked. PostgreSQL runs when KESU_TEST_POSTGRES_URL is set (.ci/run sets
it); Redis is the machine's (KESU_TEST_REDIS_URL, default 127.0.0.1:6379, database 15).
"""
import http.server
import mimetypes
import os
import socketserver
import sys
import threading
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "intake" / "static"
HARNESS = Path(__file__).with_name("harness")
# Tests live in folders that mirror the code (tests/intake, tests/workers/capture, ...) and share
# helpers by module name (from test_match import ...): every test folder is importable.
for _folder in sorted({p.parent for p in Path(__file__).parent.rglob("test_*.py")}):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))
os.environ.setdefault("SE_OFFLINE", "true")   # Selenium Manager must not look for downloads
# Crawls compute signals in their own process here (a pool's processes would each load the face
# models for every crawl test); tests/workers/signals/test_signal_pool.py tests the pool.
os.environ.setdefault("KESU_CRAWL_SIGNAL_PROCESSES", "1")

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/wasm", ".wasm")


# --- databases -------------------------------------------------------------------------

def _database_params():
    params = ["sqlite"]
    if os.environ.get("KESU_TEST_POSTGRES_URL"):
        params.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return params


def _fresh_postgres(url: str) -> str:
    """A fresh schema per test on the shared test database, dropped afterwards."""
    from sqlalchemy import create_engine, text
    schema = "t_" + uuid.uuid4().hex[:12]
    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    eng.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


@pytest.fixture(params=_database_params())
def database_url(request, tmp_path):
    """Every database-layer test runs on SQLite, and on PostgreSQL when configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kesu.db'}"
        return
    base = os.environ["KESU_TEST_POSTGRES_URL"]
    url, schema = _fresh_postgres(base)
    yield url
    from sqlalchemy import create_engine, text

    from store import db
    for key in [k for k in db._engines if schema in k]:
        db._engines.pop(key).dispose()
    eng = create_engine(base)
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    eng.dispose()


@pytest.fixture
def redis_url():
    url = os.environ.get("KESU_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    import redis
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    yield url
    conn.flushdb()


# --- a static server for browser tests ----------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves /static/ from intake/static and /harness/ from tests/harness (plus extra roots)."""
    roots: dict = {}

    def translate_path(self, path):
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                rel = path[len(prefix):].lstrip("/")
                target = (Path(root) / rel).resolve()
                if Path(root).resolve() in target.parents or target == Path(root).resolve():
                    return str(target)
        return str(Path("/nonexistent"))

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="session")
def static_server(tmp_path_factory):
    """Base URL of a loopback server for /static/ (intake/static), /harness/ and /files/.

    Tests drop files into `static_server.files` (a folder) to serve them under /files/.
    """
    files = tmp_path_factory.mktemp("served")
    handler = type("H", (_Handler,), {"roots": {"/static/": STATIC, "/harness/": HARNESS, "/files/": files}})
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Info(str):
        pass
    info = Info(f"http://127.0.0.1:{server.server_address[1]}")
    info.files = files
    yield info
    server.shutdown()


# --- real headless Chromium ------------------------------------------------------------------

def make_chromium(width=1280, height=900, extra_args=(), performance_log=False):
    from workers.capture.chromium import new_driver
    caps = {"goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"}} if performance_log else None
    return new_driver(width, height, extra_args, capabilities=caps)


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session (tests must not rely on state left by others)."""
    driver = make_chromium()
    yield driver
    driver.quit()


def wait_for(driver, js_condition: str, timeout: float = 60):
    """Wait until a JavaScript expression is truthy (conditions, never fixed sleeps)."""
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(f"return ({js_condition});"))


# --- instances ---------------------------------------------------------------------------

TEST_PASSPHRASE = "test key passphrase"


def make_instance(path, database_url, **overrides):
    """An initialised instance (keys made and unlocked) in `path`."""
    from store.config import load
    from store.instance import Instance
    settings = load(path, database_url=database_url, key_kdf="interactive", crawl_allow_private=True, **overrides)
    instance = Instance(settings)
    instance.init(TEST_PASSPHRASE)
    return instance


@pytest.fixture
def instance(tmp_path, database_url):
    """A fresh instance on SQLite (and on PostgreSQL when configured)."""
    return make_instance(tmp_path / "instance", database_url)


def serve_app(app):
    """Serve a WSGI app on 127.0.0.1 with a random port in a thread; returns (url, stop)."""
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


def kesu_cli(*args, env=None, input=None, timeout=120):
    """Run the real `kesu` console script."""
    import subprocess
    import sys
    exe = Path(sys.executable).with_name("kesu")
    return subprocess.run([str(exe), *args], input=input, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def csrf(client, path):
    """The CSRF token of the form on a page (Flask test client)."""
    import re
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def staff_client(instance, role="staff", address="staff@example.org"):
    """A Flask test client of the back office, logged in with password + TOTP."""
    import pyotp

    from backoffice import accounts, create_app
    password = "correct horse battery staple"
    secret = accounts.add(instance, address, password, role)
    client = create_app(instance).test_client()
    r = client.post("/login", data={"email": address, "password": password, "code": pyotp.TOTP(secret).now(),
                                    "csrf_token": csrf(client, "/login?lang=en")})
    assert r.status_code == 302, r.get_data(as_text=True)[:300]
    return client


def redis_dump(conn) -> bytes:
    """Every key and value in a Redis database, for scans, with RQ's zlib-compressed job data
    and exception texts also decompressed (a signal in a job argument would hide there)."""
    import zlib
    out = []
    for key in conn.scan_iter("*"):
        kind = conn.type(key)
        values = {b"string": lambda k: [conn.get(k) or b""],
                  b"hash": lambda k: [x for kv in conn.hgetall(k).items() for x in kv],
                  b"list": lambda k: conn.lrange(k, 0, -1),
                  b"set": lambda k: list(conn.smembers(k)),
                  b"zset": lambda k: conn.zrange(k, 0, -1)}.get(kind, lambda k: [])(key)
        out.append(key)
        for v in values:
            out.append(v)
            try:
                out.append(zlib.decompress(v))
            except zlib.error:
                pass
    return b"\n".join(out)
