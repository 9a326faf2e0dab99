"""The staff back office: a Flask app of its own, served only on its own port."""
import logging
from functools import wraps
from pathlib import Path

from flask import abort, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from backoffice.sessions import DatabaseSessionInterface
from store.instance import Instance
from store.models import Staff
from web import make_app, route_log


def create_app(instance: Instance | None = None):
    instance = instance or Instance()
    from workers.takedown import regimes
    regimes.regimes()                       # a bad regime file stops the start, naming the file and field
    # wasm: the login page's proof of work runs hash-wasm (WebAssembly compile only, no eval)
    app = make_app("backoffice", static_folder=Path(__file__).with_name("static"), wasm=True)
    app.config.update(
        SECRET_KEY=instance.settings.secret("session"),
        WTF_CSRF_TIME_LIMIT=None,           # the token lives as long as the session
        SESSION_COOKIE_SECURE=bool(instance.settings.extra.get("cookie_secure", False)),
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
    )
    app.extensions["kesu"] = instance
    app.session_interface = DatabaseSessionInterface(instance)
    CSRFProtect(app)
    route_log(app, "kesu.backoffice")

    @app.before_request
    def remember_language():
        """The language staff chose stays theirs on every page (?lang= on one page sets it)."""
        from store.vocabulary import LANGUAGES
        chosen = request.args.get("lang")
        if chosen in LANGUAGES and session.get("lang") != chosen:
            session["lang"] = chosen
        g.remembered_language = session.get("lang")

    @app.before_request
    def load_staff():
        g.staff = None
        staff_id = session.get("staff_id")
        if staff_id:
            with instance.session() as s:
                staff = s.get(Staff, staff_id)
            if staff is None or not staff.active:
                session.clear()
            else:
                g.staff = staff

    app.jinja_env.globals["can_open"] = can_open
    app.jinja_env.globals["category_label"] = category_label

    from backoffice import (
        admin,
        auth,
        cases,
        domains,
        main,
        manual,
        patrol,
        review,
        stats,
        takedown,
    )
    for blueprint in (auth.bp, main.bp, review.bp, takedown.bp, cases.bp, manual.bp, domains.bp, patrol.bp,
                      stats.bp, admin.bp):
        app.register_blueprint(blueprint)
    register_error_pages(app)
    logging.getLogger("kesu.backoffice").debug("back office ready")
    return app


def current_instance() -> Instance:
    from flask import current_app
    return current_app.extensions["kesu"]


def login_required(*roles):
    """Staff only; with roles given, only those roles (admin always passes)."""
    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if g.get("staff") is None:
                return redirect(url_for("auth.login", next=request.path))
            if roles and g.staff.role not in roles and g.staff.role != "admin":
                abort(403)
            return view(*args, **kwargs)
        wrapped.roles = roles               # read by can_open: pages show only links that open
        return wrapped
    return decorator


def can_open(endpoint: str) -> bool:
    """Whether the logged-in staff member's role may open `endpoint` (templates hide the rest)."""
    from flask import current_app
    staff = g.get("staff")
    view = current_app.view_functions.get(endpoint)
    if staff is None or view is None:
        return False
    roles = getattr(view, "roles", ())
    return not roles or staff.role in roles or staff.role == "admin"


def category_label(code: str | None) -> str:
    """A case category in the reader's language (store.vocabulary.CATEGORIES are codes)."""
    from flask_babel import gettext as _
    labels = {"adult_ncii": _("Intimate images shared without consent (adult)"), "minor": _("Minor (hotline only)"),
              "deepfake": _("Deepfake"), "voyeur": _("Voyeurism (secretly filmed)"),
              "coerced_av": _("Coerced adult-video appearance"), "dmca": _("Copyright (DMCA)")}
    return labels.get(code or "", code or "—")


def register_error_pages(app) -> None:
    """403, 404, 405, 413, 500 as pages of the back office (its layout, the reader's language)."""
    from flask import render_template
    from flask_babel import gettext as _
    from werkzeug.exceptions import HTTPException, InternalServerError

    def page(code: int):
        texts = {400: (_("The form could not be used"), _("The page was open too long, or the form was sent twice. "
                                                        "Go back, reload the page and try again.")),
                 403: (_("Not for your role"), _("Your role cannot open this page. The menu shows the pages you can use.")),
                 404: (_("Not found"), _("This page does not exist, or what it showed was withdrawn.")),
                 405: (_("Not possible here"), _("This address does not take that kind of request.")),
                 413: (_("Too large"), _("What you sent is larger than the back office accepts.")),
                 500: (_("Something went wrong"), _("The back office failed on this page. Nothing was lost; "
                                                    "try again, and tell the administrator if it happens again."))}
        title, text = texts.get(code, texts[500])
        return render_template("backoffice/error.html", code=code, title=title, text=text), code

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return page(exc.code) if exc.code in (400, 403, 404, 405, 413) else exc

    @app.errorhandler(InternalServerError)
    def server_error(_exc):
        return page(500)
