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
    app = make_app("backoffice", static_folder=Path(__file__).with_name("static"))
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

    from backoffice import (
        admin,
        auth,
        domains,
        main,
        manual,
        patrol,
        review,
        stats,
        takedown,
    )
    for blueprint in (auth.bp, main.bp, review.bp, takedown.bp, manual.bp, domains.bp, patrol.bp, stats.bp,
                      admin.bp):
        app.register_blueprint(blueprint)
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
        return wrapped
    return decorator
