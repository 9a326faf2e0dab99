"""The patrol page: what the patrol did (24 hours, 7 days, per day, per domain), and each
domain's patrol settings (seeds, frequency, budgets, "next" selector, gate, cookie).

Numbers only: domains, counts, errors; never a case, never a signal.
"""
import click
from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _

from store import audit
from store.models import Domain, utcnow

from . import current_instance, login_required

bp = Blueprint("patrol", __name__, url_prefix="/patrol")


def _labels() -> dict:
    return {"pages": _("Pages loaded"), "media": _("Media seen"), "matches": _("Matches found"),
            "errors": _("Errors"), "blocked": _("Blocked pages"), "runs": _("Runs")}


@bp.route("/")
@login_required()
def index():
    from workers.patrol import overview
    data = overview(current_instance())
    return render_template("backoffice/patrol.html", data=data, labels=_labels())


@bp.route("/data.json")
@login_required()
def data_json():
    from workers.patrol import overview
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
    from workers.patrol import clean_patrol, site_config
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


# --- `kesu patrol` (manage.py registers it: cli.add_command(patrol_command, "patrol")) -------------

@click.command("patrol")
@click.option("--domain", "domains", multiple=True, help="Patrol only this domain (repeatable), due or not.")
@click.option("--limit", type=int, default=None, help="At most this many due domains.")
@click.option("--fill", "fill_only", is_flag=True, help="Only put due domains on the crawl queue (for the workers).")
def patrol_command(domains, limit, fill_only):
    """Patrol due domains now in this process (one browser), or --fill the crawl queue.
    Prints one JSON line per run (pages, bytes, media, matches, errors, what stopped it)."""
    import json

    from sqlalchemy import select

    from workers import patrol as P
    from .manage import open_instance
    instance = open_instance(unlock=True)
    if fill_only:
        click.echo(json.dumps({"queued": P.fill(instance)}))
        return
    if domains:
        with instance.session() as s:
            ids = list(s.execute(select(Domain.id).where(Domain.domain.in_(domains))).scalars())
        from workers.crawl import _browser
        driver = _browser(instance.settings)
        try:
            runs = [P.patrol_site(instance, i, driver=driver) for i in ids]
        finally:
            driver.quit()
    else:
        runs = P.patrol(instance, limit=limit,
                        progress=lambda p: click.echo(f"{p.get('domain')} {p.get('url')}", err=True))
    for r in runs:
        click.echo(json.dumps({k: v for k, v in r.items() if k != "detail"}))
