"""The intake JSON API (DESIGN.md §6.3): cookie-less, ciphertext only.

Every request that names a case runs the same path whether or not the case exists: the
throttle (keyed by the HMAC of the number), one database look-up, one Argon2id check;
a wrong passphrase and an unknown case both get the same 401. Sealed submissions are
stored as they came and handed to the take-in worker by id (never by content); without a
reachable Redis they wait in the database for `workers.cases.takein.take_in_pending`.
"""
import logging
import threading
from urllib.parse import unquote

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from crypto.sealing import unb64
from intake import current_instance
from store import cases, continuation
from store.models import OrgKey, Submission
from store.vocabulary import LANGUAGES
from web.throttle import WORK_HEADER, RateLimit, Throttle, Verdict, retry_after
from workers import jobs  # job names only: the intake never imports code that decrypts

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger("kesu.intake")

SEAL_OVERHEAD = 48                       # crypto_box_SEALBYTES: an ephemeral key and a MAC
PASSPHRASE_HEADER = "X-Kesu-Passphrase"
MAX_PENDING_SUBMISSIONS = 5              # per case, waiting for the take-in worker
_UNAUTHORISED = {"error": "unknown_case_or_passphrase",
                 "message": "The case number or the passphrase is not right."}
_throttle_lock = threading.Lock()


def _error(status: int, code: str, message: str, work: dict | None = None, **headers):
    response = jsonify(error=code, message=message, **({"work": work} if work else {}))
    response.status_code = status
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def throttle() -> Throttle:
    with _throttle_lock:
        found = current_app.extensions.get("kesu.throttle")
        if found is None:
            found = current_app.extensions["kesu.throttle"] = Throttle.from_settings(current_instance().settings)
        return found


def creations() -> RateLimit:
    with _throttle_lock:
        found = current_app.extensions.get("kesu.create_limit")
        if found is None:
            found = current_app.extensions["kesu.create_limit"] = RateLimit.from_settings(current_instance().settings)
        return found


@bp.get("/key")
def key():
    key_id, public_key = current_instance().public_key()
    return jsonify(key_id=key_id, public_key=public_key)


@bp.app_errorhandler(RequestEntityTooLarge)
def too_large(_exc):
    return _error(413, "too_large", "The submission is larger than this server accepts.")


@bp.app_errorhandler(HTTPException)
def http_error(exc):
    """The API answers in JSON, errors included (never an HTML page)."""
    if not request.path.startswith(bp.url_prefix + "/"):
        return exc
    return _error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), exc.description or "")


@bp.app_errorhandler(Exception)
def unexpected(exc):
    """An unexpected error: logged with the route template (web._App), answered in JSON."""
    current_app.log_exception((type(exc), exc, exc.__traceback__))
    if not request.path.startswith(bp.url_prefix + "/"):
        from intake.main import error_page  # a page: the quick exit and a person stay
        return error_page(InternalServerError())
    return _error(500, "server_error", "Something went wrong on our side. Nothing was changed.")


def _slowed(verdict: Verdict, message: str):
    """429: wait Retry-After seconds, or solve `work` (intake/static/js/pow.js) and send again."""
    return _error(429, "slow_down", message, work=verdict.work, Retry_After=retry_after(verdict.wait))


def _sealed_body():
    """(key_id, sealed bytes) from the JSON body, or an error response."""
    try:
        body = request.get_json(silent=True, force=True)
    except RecursionError:                 # JSON nested deeper than the parser goes
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("key_id"), str) \
            or not isinstance(body.get("sealed"), str):
        return None, _error(400, "malformed", 'The body must be JSON {"key_id": str, "sealed": base64}.')
    try:
        sealed = unb64(body["sealed"])
    except ValueError:
        return None, _error(400, "malformed", "sealed is not standard padded base64.")
    if len(sealed) <= SEAL_OVERHEAD:
        return None, _error(400, "malformed", "sealed is too short to be a sealed box.")
    if len(sealed) > current_instance().settings.max_submission_bytes:
        return None, _error(413, "too_large", "The submission is larger than this server accepts.")
    with current_instance().session() as s:
        known = s.execute(select(OrgKey.key_id).where(OrgKey.key_id == body["key_id"][:32])).first()
    if known is None or len(body["key_id"]) > 32:
        return None, _error(409, "unknown_key", "This key is not ours (any more): fetch /api/v1/key again.")
    return (body["key_id"], sealed), None


def _enqueue(name: str, *ids) -> bool:
    return jobs.enqueue(current_instance().settings, name, *ids)


def passphrase_header() -> str:
    """The passphrase as sent: percent-encoded UTF-8 (§6.3), so Japanese words fit a header."""
    return unquote(request.headers.get(PASSPHRASE_HEADER, ""), errors="replace")


def page_language() -> str:
    """The language of the page she registered on: the body's "language", else Accept-Language."""
    body = request.get_json(silent=True, force=True)
    chosen = body.get("language") if isinstance(body, dict) else None
    if chosen in LANGUAGES:
        return chosen
    return "ja" if any(lang.lower().startswith("ja") for lang, _ in request.accept_languages) else "en"


def _authenticated(number: str):
    """(case_id, None) or (None, 401/429 response). The same path for every number."""
    inst = current_instance()
    if not cases.normalize_number(number).isascii():   # digits of another script: never a case number
        return None, _error(400, "malformed", "A case number has the digits 0-9 only.")
    key_name = cases.number_key(inst.pepper, number)
    gate = throttle()
    verdict = gate.begin(key_name, request.headers.get(WORK_HEADER))
    if not verdict.allowed:
        return None, _slowed(verdict, "Too many tries. Please wait a little and try again.")
    case_id = None
    try:
        case_id = cases.authenticate(inst, number, passphrase_header())
    finally:
        gate.end(key_name, ok=case_id is not None)
    if case_id is None:
        return None, (jsonify(_UNAUTHORISED), 401)
    return case_id, None


@bp.post("/cases")
def create_case():
    parsed, error = _sealed_body()
    if error:
        return error
    key_id, sealed = parsed
    verdict = creations().take(request.headers.get(WORK_HEADER))
    if not verdict.allowed:
        return _slowed(verdict, "Many cases are being registered right now. Please try again shortly.")
    number, passphrase, _case_id, submission_id = cases.create_case(current_instance(), key_id, sealed,
                                                                    language=page_language())
    _enqueue("take_in", submission_id)
    return jsonify(case_number=number, passphrase=passphrase), 201


@bp.post("/cases/<number>/signals")
def add_signals(number):
    case_id, error = _authenticated(number)
    if error:
        return error
    parsed, error = _sealed_body()
    if error:
        return error
    key_id, sealed = parsed
    inst = current_instance()
    with inst.session() as s:
        waiting = s.execute(select(func.count()).select_from(Submission).where(Submission.case_id == case_id)).scalar()
    if waiting >= int(inst.settings.extra.get("max_pending_submissions", MAX_PENDING_SUBMISSIONS)):
        # Each case holds a few submissions not yet taken in, never an unbounded pile.
        return _error(429, "still_taking_in", "Your earlier additions are still being taken in. "
                      "Please try again in a few minutes.", Retry_After="120")
    submission_id = cases.add_submission(inst, case_id, key_id, sealed)
    _enqueue("take_in", submission_id)
    return jsonify(received=True), 202


@bp.get("/cases/<number>/status")
def case_status(number):
    case_id, error = _authenticated(number)
    if error:
        return error
    # She came to look: that answers the yearly "shall we go on?" question (rows only, no keys).
    continuation.answered(current_instance(), case_id)
    found = cases.status(current_instance(), case_id)
    if found is None:
        return jsonify(_UNAUTHORISED), 401
    return jsonify(found)


@bp.delete("/cases/<number>/items/<item>")
def delete_item(number, item):
    case_id, error = _authenticated(number)
    if error:
        return error
    if not cases.delete_item(current_instance(), case_id, item[:20]):
        return _error(404, "no_such_item", "This case has no such item (or it is still being processed).")
    return "", 204


@bp.delete("/cases/<number>")
def withdraw(number):
    case_id, error = _authenticated(number)
    if error:
        return error
    cases.withdraw(current_instance(), case_id)
    _enqueue("case_withdrawn", case_id)   # the matcher drops the case from its index
    return "", 204
