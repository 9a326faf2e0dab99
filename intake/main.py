"""Intake pages: the form at / and the status page at /status (Japanese or English).

Pages set no cookie and keep nothing in the browser; every action goes through the JSON
API from the page's own scripts. The quick-exit target is a neutral site, reached only
when the button is pressed (nothing is loaded from it before).
"""
import json
from pathlib import Path

from flask import Blueprint, current_app, render_template, request, url_for

from intake import current_instance
from intake.helplines import helplines
from web import current_language

bp = Blueprint("main", __name__)

EXIT_URLS = {"ja": "https://tenki.jp/", "en": "https://www.bbc.com/weather"}


# What the selfie step downloads (faces.js and what it loads), fetched with a progress bar.
FACE_TOOL = ("js/faces.js", "vendor/face-api/face-api.esm.js", "vendor/tfjs-wasm/tfjs-backend-wasm-simd.wasm",
             *(f"vendor/face-api/model/{net}{suffix}" for net in
               ("ssd_mobilenetv1_model", "face_landmark_68_model", "face_recognition_model")
               for suffix in ("-weights_manifest.json", ".bin")))


def face_tool() -> str:
    """JSON {"files": [[url, bytes]], "total": bytes} of the face tool's files that exist."""
    static = Path(current_app.static_folder)
    files = [(url_for("static", filename=name), (static / name).stat().st_size)
             for name in FACE_TOOL if (static / name).is_file()]
    return json.dumps({"files": files, "total": sum(size for _, size in files)})


def page_context() -> dict:
    """What every intake page shows (errors included): the quick exit and a person to reach."""
    settings = current_instance().settings
    language = current_language()
    exit_url = settings.extra.get(f"exit_url_{language}") or EXIT_URLS.get(language, EXIT_URLS["en"])
    return dict(exit_url=exit_url, org_name=settings.org_name, org_phone=settings.org_phone,
                org_email=settings.org_email, org_chat=settings.org_chat,
                helplines=helplines(settings, language))


def _page(template: str, name: str, script: str):
    tool = face_tool()
    return render_template(template, page_name=name, page_script=script, face_tool=tool,
                           face_tool_mb=round(json.loads(tool)["total"] / 1e6), **page_context())


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
@bp.app_errorhandler(500)
def error_page(exc):
    """An error still offers the quick exit and a person (the API answers JSON, as §6.3 says)."""
    code = getattr(exc, "code", 500) or 500
    if request.path.startswith("/api/"):
        from intake.api import http_error  # the API's one home for its JSON errors
        return http_error(exc)
    return render_template("intake/error.html", page_name="error", page_script="intake.js", code=code,
                           **page_context()), code


@bp.get("/")
def index():
    return _page("intake/index.html", "intake", "intake.js")


@bp.get("/status")
def status():
    return _page("intake/status.html", "status", "status.js")
