"""Security headers on both apps, and logs that never name a client."""
import logging

import pytest

from backoffice import create_app as create_backoffice
from intake import create_app as create_intake

UA = "kesu-test-agent/3f9c1e"
IP = "203.0.113.77"


@pytest.fixture
def apps(instance):
    return create_intake(instance), create_backoffice(instance)


def test_security_headers_on_every_response(apps):
    intake, office = apps
    for app, paths in ((intake, ["/", "/api/v1/key", "/static/css/kesu.css", "/nope"]),
                       (office, ["/login", "/", "/nope"])):
        client = app.test_client()
        for path in paths:
            r = client.get(path)
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            # no directive lets the page reach another origin
            sources = {src for part in csp.split(";") for src in part.split()[1:]}
            assert sources <= {"'self'", "'none'", "data:", "blob:", "'wasm-unsafe-eval'"}, sources
            assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", "")
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_csrf_guards_back_office_forms(apps):
    _, office = apps
    client = office.test_client()
    r = client.post("/login", data={"email": "a@example.org", "password": "x" * 12, "code": "123456"})
    assert r.status_code == 400


def test_japanese_by_default_when_the_browser_asks(apps):
    _, office = apps
    client = office.test_client()
    assert "ログイン" in client.get("/login", headers={"Accept-Language": "en-US;q=0.9, ja;q=0.5"}).get_data(True)
    assert "Log in" in client.get("/login", headers={"Accept-Language": "en-US"}).get_data(True)
    assert "Log in" in client.get("/login?lang=en", headers={"Accept-Language": "ja"}).get_data(True)


def test_an_unhandled_error_logs_the_route_not_the_case_number(apps, caplog):
    intake, _ = apps
    intake.add_url_rule("/api/v1/cases/<case_number>/boom", "boom", lambda case_number: 1 / 0)
    intake.testing = False                       # errors go to log_exception, as in production
    caplog.set_level(logging.DEBUG)
    assert intake.test_client().get("/api/v1/cases/123456789012/boom").status_code == 500
    assert "Exception on /api/v1/cases/<case_number>/boom [GET]" in caplog.text
    assert "123456789012" not in caplog.text


def test_logs_hold_no_address_or_user_agent(apps, caplog):
    intake, office = apps
    caplog.set_level(logging.DEBUG)
    headers = {"User-Agent": UA, "X-Forwarded-For": IP}
    intake.test_client().get("/api/v1/key", headers=headers, environ_base={"REMOTE_ADDR": "198.51.100.9"})
    office.test_client().get("/login", headers=headers, environ_base={"REMOTE_ADDR": "198.51.100.9"})
    text = caplog.text
    assert "GET /api/v1/key 200" in text and "GET /login 200" in text
    for secret in (UA, IP, "198.51.100.9"):
        assert secret not in text


def test_waitress_names_no_path_when_a_request_fails(caplog):
    """The real waitress server logs "Exception while serving <path>" when an app raises, and
    "Client disconnected while serving <path>" when a client hangs up mid-request; paths hold
    case numbers, so neither line may name the path. The exception line is produced by the
    real server here; the disconnect line goes through the same logger and filter (waitress
    notices a hang-up only on its next socket event, which a test cannot time reliably)."""
    import threading
    import urllib.error
    import urllib.request

    from waitress.server import create_server

    from web import make_app
    make_app("waitress-log-test")                  # creating an app installs the path filter
    number = "987654321098"

    def failing(environ, start_response):
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="waitress")
    server = create_server(failing, host="127.0.0.1", port=0, threads=1)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.effective_port}/api/v1/cases/{number}/status", timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 500
    finally:
        server.close()
    logging.getLogger("waitress").info("Client disconnected while serving %s", f"/api/v1/cases/{number}/status")
    text = caplog.text
    assert "Exception while serving a request" in text, text
    assert "Client disconnected while serving a request" in text, text
    assert number not in text and "/api/v1/cases" not in text

