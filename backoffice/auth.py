"""Login with password + TOTP, and logout."""
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    flash,
    g,
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
from store import audit

bp = Blueprint("auth", __name__)


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


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            staff = accounts.authenticate(current_instance(), form.email.data, form.password.data, form.code.data)
        except accounts.LoginRefused as refused:
            flash(_("Too many attempts. Please wait and try again.") if refused.retry_after
                  else _("The e-mail, password or code is not right."), "error")
            status = 429 if refused.retry_after else 401
        else:
            session.clear()
            session.regenerate()
            session["staff_id"] = staff.id
            return redirect(local_target(request.args.get("next", "")) or url_for("main.home"))
    elif request.method == "POST":
        status = 400
    return render_template("backoffice/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
def logout():
    if g.get("staff") is not None:
        with current_instance().session() as s:
            audit.record(s, f"staff:{g.staff.id}", "logout", f"staff:{g.staff.id}")
    session.clear()
    return redirect(url_for("auth.login"))
