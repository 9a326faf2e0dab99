"""Login with password + TOTP, and logout."""
import threading
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from backoffice import accounts, current_instance
from crypto import envelope
from store import audit
from web.throttle import Throttle, retry_after

bp = Blueprint("auth", __name__)
_throttle_lock = threading.Lock()


class LoginForm(FlaskForm):
    email = EmailField("email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("password", validators=[DataRequired(), Length(max=1024)])
    code = StringField("code", validators=[DataRequired(), Length(min=6, max=8)])


def local_target(target: str) -> str | None:
    """`target` when it is a path on this site, else None. Browsers drop tabs and newlines
    inside URLs and read a backslash as a slash ("/<TAB>/evil.example" leaves the site), so any
    control character, space or backslash is refused outright."""
    if not target.startswith("/") or any(c <= " " or c in "\\\x7f" for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target


def _throttle() -> Throttle:
    with _throttle_lock:
        found = current_app.extensions.get("kesu.login_throttle")
        if found is None:
            found = current_app.extensions["kesu.login_throttle"] = Throttle.from_settings(current_instance().settings)
        return found


def _login_key(email: str) -> str:
    """Keyed by the address typed, whether or not an account has it: no account oracle."""
    normalised = (email or "").strip().lower().encode("utf-8")
    return envelope.keyed_name(current_instance().pepper, b"staff-login:" + normalised)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Password + TOTP. After a few failures for an address, a login waits a growing delay or
    solves a proof-of-work challenge in the page (login.js); a solved one is always checked,
    so no one can keep a colleague out by failing on purpose."""
    form = LoginForm()
    status, work = 200, None
    if form.validate_on_submit():
        key = _login_key(form.email.data)
        gate = _throttle()
        verdict = gate.begin(key, request.form.get("work"))
        if not verdict.allowed:
            flash(_("Many attempts were made with this address. Your browser does a short check "
                    "(a few seconds) before logging you in: enter your password and code again."), "error")
            status, work = 429, verdict.work
        else:
            staff = None
            try:
                staff = accounts.authenticate(current_instance(), form.email.data, form.password.data,
                                              form.code.data)
            except accounts.LoginRefused:
                flash(_("The e-mail, password or code is not right."), "error")
                status = 401
            finally:
                gate.end(key, ok=staff is not None)
            if staff is not None:
                session.clear()
                session.regenerate()
                session["staff_id"] = staff.id
                return redirect(local_target(request.args.get("next", "")) or url_for("main.home"))
    elif request.method == "POST":
        status = 400
    response = make_response(render_template("backoffice/login.html", form=form, work=work), status)
    if work:
        response.headers["Retry-After"] = retry_after(verdict.wait)
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    if g.get("staff") is not None:
        with current_instance().session() as s:
            audit.record(s, f"staff:{g.staff.id}", "logout", f"staff:{g.staff.id}")
    session.clear()
    return redirect(url_for("auth.login"))
