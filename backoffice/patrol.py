"""The patrol page: what the patrol did (24 hours, 7 days, per day, per domain), and each
domain's patrol settings (seeds, frequency, budgets, "next" selector, gate, cookie).

Numbers only: domains, counts, errors; never a case, never a signal.
"""
from flask import (
    Blueprint,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _

from backoffice import current_instance, login_required
from store import audit
from store.models import Domain, utcnow

bp = Blueprint("patrol", __name__, url_prefix="/patrol")


def _labels() -> dict:
    return {"pages": _("Pages loaded"), "media": _("Media seen"), "matches": _("Matches found"),
            "errors": _("Errors"), "blocked": _("Blocked pages"), "runs": _("Runs")}


@bp.route("/")
@login_required()
def index():
    from workers.capture.patrol import overview
    data = overview(current_instance())
    return render_template("backoffice/patrol.html", data=data, labels=_labels())


@bp.route("/data.json")
@login_required()
def data_json():
    from workers.capture.patrol import overview
    data = overview(current_instance())
    data["labels"] = _labels()
    return jsonify(data)


FORM_FIELDS = ("patrol_seeds", "patrol_every_s", "patrol_pages", "patrol_bytes", "patrol_pages_day",
               "patrol_next", "patrol_gate", "patrol_cookie")


def _as_text(domain) -> dict:
    return {"patrol_seeds": "\n".join(domain.patrol_seeds or []),
            "patrol_every_s": str(domain.patrol_every_s or ""), "patrol_pages": str(domain.patrol_pages or ""),
            "patrol_bytes": str(domain.patrol_bytes or ""), "patrol_pages_day": str(domain.patrol_pages_day or ""),
            "patrol_next": domain.patrol_next or "", "patrol_gate": domain.patrol_gate or "",
            "patrol_cookie": domain.patrol_cookie or ""}


@bp.route("/domains/<int:domain_id>", methods=["GET", "POST"])
@login_required("staff")
def edit(domain_id):
    from workers.capture.patrol import clean_patrol, site_config
    instance = current_instance()
    error = None
    with instance.session() as s:
        domain = s.get(Domain, domain_id)
        if domain is None:
            abort(404)
        values = _as_text(domain)
        if request.method == "POST":
            values = {k: request.form.get(k, "") for k in FORM_FIELDS}
            try:
                cleaned = clean_patrol(values)
            except ValueError as exc:
                error = str(exc)
            else:
                for k, v in cleaned.items():
                    setattr(domain, k, v)
                domain.patrol_enabled = request.form.get("patrol_enabled") == "1"
                if request.form.get("patrol_now") == "1":
                    domain.next_patrol_at = utcnow()
                domain.updated_at = utcnow()
                audit.record(s, f"staff:{g.staff.id}", "domain_patrol_edit", f"domain:{domain.id}")
                flash(_("Saved."), "ok")
                return redirect(url_for("patrol.edit", domain_id=domain.id))
        effective = site_config(instance.settings, domain)
    return render_template("backoffice/patrol_domain.html", domain=domain, values=values, error=error,
                           effective=effective), (400 if error else 200)
