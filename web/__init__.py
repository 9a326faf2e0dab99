"""Plumbing both Flask apps share: security headers, caching, compression, language, logs without IPs.

Kept apart from intake/ and backoffice/ so that neither app imports the other.
Imports nothing of ours.

Static files are served under a versioned path, /static/<version>/... (the version is a
hash of every static file), and cached for a year: a phone on mobile data fetches the
scripts and the face tool once, and a changed file gets a new URL. ES modules and the
workers import each other by relative URL, so they stay inside the same version. Pages
and the API stay `no-store`. Text is compressed (brotli or gzip, Flask-Compress); the JSON
API is not, so no secret is ever compressed beside something an attacker sent.
"""
import hashlib
import logging
from pathlib import Path

from flask import Blueprint, Flask, g, request
from flask_babel import Babel
from flask_compress import Compress

from store.vocabulary import LANGUAGES

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
TRANSLATIONS = ROOT / "translations"


class _App(Flask):
    def log_exception(self, exc_info) -> None:
        """Flask logs the request path of an unhandled error; paths hold case numbers, so the
        route template is logged instead (as route_log does)."""
        rule = request.url_rule.rule if request.url_rule else "<unmatched>"
        self.logger.error("Exception on %s [%s]", rule, request.method, exc_info=exc_info)


SHARED_STATIC = Path(__file__).with_name("static")
STATIC_ENDPOINTS = ("static", "shared.static")          # versioned: cached for a year
COMPRESSED = ["text/html", "text/css", "text/javascript", "application/javascript", "application/wasm",
              "image/svg+xml", "text/plain"]


def asset_version(*folders: Path) -> str:
    """A short hash of every file (path, size, modification time) under the folders."""
    digest = hashlib.sha256()
    for folder in folders:
        if not folder or not Path(folder).is_dir():
            continue
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            st = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def make_app(name: str, static_folder: Path | None = None, wasm: bool = False) -> Flask:
    version = asset_version(static_folder, SHARED_STATIC)
    app = _App(name, template_folder=str(TEMPLATES),
                static_folder=str(static_folder) if static_folder else None,
                static_url_path=f"/static/{version}")
    app.config.update(
        BABEL_TRANSLATION_DIRECTORIES=str(TRANSLATIONS),
        BABEL_DEFAULT_LOCALE="en",
        JSON_AS_ASCII=False,
        SEND_FILE_MAX_AGE_DEFAULT=0,
        KESU_ASSET_VERSION=version,
        COMPRESS_MIMETYPES=COMPRESSED,
        COMPRESS_ALGORITHM=["br", "gzip"],
        COMPRESS_ALGORITHM_STREAMING=["br", "deflate"],   # files stream; gzip cannot
        COMPRESS_BR_LEVEL=5,
    )
    Babel(app, locale_selector=select_language)
    Compress(app)
    # The stylesheet both apps share, served by each from its own origin under /shared/.
    app.register_blueprint(Blueprint("shared", __name__, static_folder="static", static_url_path=f"/shared/{version}"))
    if static_folder:
        # The same files at their plain paths (old links, test harnesses), revalidated each time.
        app.add_url_rule("/static/<path:filename>", "static_plain", app.send_static_file)
    app.jinja_env.globals["current_language"] = current_language
    _security_headers(app, wasm)
    _quiet_logs()
    return app


def current_language() -> str:
    return getattr(g, "language", None) or select_language()


def select_language() -> str:
    """?lang= wins, then a choice the app remembered (the back office keeps it in the staff
    session: g.remembered_language); otherwise Japanese whenever the browser asks for it."""
    chosen = request.args.get("lang")
    if chosen not in LANGUAGES:
        chosen = g.get("remembered_language")
    if chosen in LANGUAGES:
        g.language = chosen
        return chosen
    wants_ja = any(lang.lower().startswith("ja") for lang, _ in request.accept_languages)
    g.language = "ja" if wants_ja else "en"
    return g.language


def _security_headers(app: Flask, wasm: bool) -> None:
    script = "'self' 'wasm-unsafe-eval'" if wasm else "'self'"
    csp = ("default-src 'self'; "
           f"script-src {script}; "
           "style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
           "font-src 'self'; connect-src 'self'; worker-src 'self' blob:; "
           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = csp
        if request.endpoint in STATIC_ENDPOINTS and response.status_code in (200, 304):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        elif request.endpoint == "static_plain" and response.status_code in (200, 304):
            response.headers["Cache-Control"] = "no-cache"
        else:
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
        response.headers.pop("Server", None)
        return response


class _NoPaths(logging.Filter):
    """Waitress names the request path when a client disconnects or an app raises ("... while
    serving /api/v1/cases/<number>/status"); paths hold case numbers, so the path goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        at = message.find(" while serving ")
        if at >= 0:
            record.msg, record.args = message[:at] + " while serving a request (path not logged)", ()
        return True


def _quiet_logs() -> None:
    """Werkzeug's access log names the client address: it never runs. Waitress logs no access,
    and its error lines lose the request path."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    waitress = logging.getLogger("waitress")
    if not any(isinstance(f, _NoPaths) for f in waitress.filters):
        waitress.addFilter(_NoPaths())


def route_log(app: Flask, logger_name: str) -> None:
    """One log line per request naming the route template (never the path's values)."""
    log = logging.getLogger(logger_name)

    @app.after_request
    def _log(response):
        rule = request.url_rule.rule if request.url_rule else "<unmatched>"
        log.info("%s %s %s", request.method, rule, response.status_code)
        return response
