"""Admin pages: staff accounts and system health (admin role only, CSRF on every form)."""
from flask import (
    Blueprint,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    url_for,
)
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField

from backoffice import current_instance, login_required, staffadmin
from backoffice.accounts import ROLES, provisioning_uri
from workers.system import health

bp = Blueprint("admin", __name__, url_prefix="/admin")


class ActionForm(FlaskForm):
    """A button: only the CSRF token travels."""


class RoleForm(FlaskForm):
    role = SelectField("role", choices=list(ROLES))


class JobForm(FlaskForm):
    job_id = HiddenField("job_id")


def _actor() -> str:
    return f"staff:{g.staff.id}"


def _role_names() -> dict:
    return {"admin": _("Admin"), "staff": _("Staff"), "lawyer": _("Lawyer")}


@bp.route("/")
@login_required("admin")
def index():
    return redirect(url_for("admin.staff"))


# --- staff -----------------------------------------------------------------------------------

@bp.route("/staff")
@login_required("admin")
def staff():
    rows = staffadmin.list_staff(current_instance())
    return render_template("backoffice/admin_staff.html", rows=rows, roles=ROLES, role_names=_role_names(),
                           action=ActionForm(), role_form=RoleForm())


def _run(fn, *args):
    try:
        return fn(current_instance(), _actor(), *args)
    except staffadmin.StaffError as exc:
        if "last active admin" in str(exc):
            flash(_("This is the last active admin. Make another admin first."), "error")
        else:
            flash(_("No such staff account."), "error")
        return None


@bp.route("/staff/<int:staff_id>/disable", methods=["POST"])
@login_required("admin")
def disable(staff_id):
    if not ActionForm().validate_on_submit():
        abort(400)
    if _run(staffadmin.disable, staff_id) is not None:
        flash(_("The account is disabled and its sessions have ended."), "ok")
    return redirect(url_for("admin.staff"))


@bp.route("/staff/<int:staff_id>/enable", methods=["POST"])
@login_required("admin")
def enable(staff_id):
    if not ActionForm().validate_on_submit():
        abort(400)
    if _run(staffadmin.enable, staff_id) is not None:
        flash(_("The account is enabled again."), "ok")
    return redirect(url_for("admin.staff"))


@bp.route("/staff/<int:staff_id>/role", methods=["POST"])
@login_required("admin")
def role(staff_id):
    form = RoleForm()
    if not form.validate_on_submit():
        abort(400)
    if _run(staffadmin.set_role, staff_id, form.role.data) is not None:
        flash(_("The role is changed."), "ok")
    return redirect(url_for("admin.staff"))


@bp.route("/staff/<int:staff_id>/reset-totp", methods=["POST"])
@login_required("admin")
def reset_totp(staff_id):
    import segno
    if not ActionForm().validate_on_submit():
        abort(400)
    result = _run(staffadmin.reset_totp, staff_id)
    if result is None:
        return redirect(url_for("admin.staff"))
    email, secret = result
    uri = provisioning_uri(current_instance(), email, secret)
    qr = segno.make(uri, error="m").svg_data_uri(scale=5)
    # Shown once: the page is no-store and the secret is never shown again.
    return render_template("backoffice/admin_totp.html", email=email, secret=secret, uri=uri, qr=qr)


# --- health ----------------------------------------------------------------------------------

@bp.route("/health")
@login_required("admin")
def health_page():
    status = health.collect(current_instance())
    return render_template("backoffice/admin_health.html", status=status, job_form=JobForm(),
                           human_bytes=health.human_bytes)


@bp.route("/health.json")
@login_required("admin")
def health_json():
    return jsonify(health.collect(current_instance()))


def _job_action(fn, done_message):
    form = JobForm()
    if not form.validate_on_submit() or not form.job_id.data:
        abort(400)
    try:
        fn(current_instance(), _actor(), form.job_id.data)
    except KeyError:
        flash(_("That job is no longer among the failed jobs."), "error")
    else:
        flash(done_message, "ok")
    return redirect(url_for("admin.health_page"))


@bp.route("/jobs/retry", methods=["POST"])
@login_required("admin")
def retry_job():
    return _job_action(health.retry_failed, _("The job is back on its queue."))


@bp.route("/runs/retry", methods=["POST"])
@login_required("admin")
def retry_run():
    return _job_action(health.retry_run, _("The job is back on its queue."))


@bp.route("/jobs/discard", methods=["POST"])
@login_required("admin")
def discard_job():
    return _job_action(health.discard_failed, _("The job is discarded (written to the audit log)."))
