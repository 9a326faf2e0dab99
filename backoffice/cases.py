"""A case as a lawyer works on it: its takedowns, the evidence captured, the notices sent, the
history, and the evidence PDF (export, and verify a PDF someone hands back).

Cases are named by their internal id ("case 12"), never by the victim's case number: that
number is her secret (only its keyed hash is stored), so the back office cannot show it.
`kesu evidence export 12` takes the same id."""
import hashlib
import tempfile
from pathlib import Path

from flask import Blueprint, Response, abort, flash, g, render_template, request
from flask_babel import gettext as _
from sqlalchemy import func, select

from backoffice import current_instance, login_required
from store import audit, people
from store.models import AuditEntry, Capture, Case, Match, Media, Notice, Takedown, TakedownEvent

bp = Blueprint("cases", __name__, url_prefix="/cases")


def case_status_labels() -> dict:
    return {"received": _("Received, not yet searched"), "searching": _("Being searched for"),
            "found": _("Found on the web"), "requested": _("Removal requested"), "removed": _("Removed"),
            "withdrawn": _("Withdrawn")}


@bp.context_processor
def labels():
    from backoffice.takedown import status_labels
    return {"case_status": case_status_labels(), "takedown_status": status_labels()}


@bp.route("/")
@login_required()
def index():
    with current_instance().session() as s:
        counts = dict(s.execute(select(Takedown.case_id, func.count()).group_by(Takedown.case_id)).all())
        matched = dict(s.execute(select(Match.case_id, func.count()).where(Match.state == "confirmed")
                                 .group_by(Match.case_id)).all())
        cases = s.execute(select(Case).where(Case.status != "withdrawn").order_by(Case.id.desc()).limit(500)
                          ).scalars().all()
        rows = [{"id": c.id, "category": c.category, "status": c.status, "created": c.created_on,
                 "takedowns": counts.get(c.id, 0), "confirmed": matched.get(c.id, 0)} for c in cases]
    return render_template("backoffice/cases.html", rows=rows)


def _case_view(s, case_id: int) -> dict:
    case = s.get(Case, case_id)
    if case is None or case.status == "withdrawn":
        abort(404)
    name = people.describer(s)
    takedowns = s.execute(select(Takedown).where(Takedown.case_id == case_id).order_by(Takedown.id)).scalars().all()
    evidence = s.execute(select(Capture, Media, Match).join(Media, Media.capture_id == Capture.id)
                         .join(Match, Match.media_id == Media.id)
                         .where(Match.case_id == case_id, Match.state != "rejected")
                         .order_by(Capture.captured_at)).all()
    ids = [t.id for t in takedowns]
    notices = s.execute(select(Notice).where(Notice.takedown_id.in_(ids), Notice.channel != "victim")
                        .order_by(Notice.id)).scalars().all() if ids else []
    events = s.execute(select(TakedownEvent).where(TakedownEvent.takedown_id.in_(ids))
                       .order_by(TakedownEvent.at.desc())).scalars().all() if ids else []
    trail = s.execute(select(AuditEntry).where(AuditEntry.target == f"case:{case_id}")
                      .order_by(AuditEntry.id.desc()).limit(200)).scalars().all()
    return {"case": case, "takedowns": takedowns, "notices": notices,
            "evidence": [{"capture": c.id, "page": c.url, "at": c.captured_at, "server_ip": c.server_ip,
                          "media": m.url, "kind": x.kind, "state": x.state,
                          "proxy": bool((c.evidence or {}).get("proxy"))} for c, m, x in evidence],
            "history": [{"at": e.at, "what": e.kind, "takedown": e.takedown_id, "by": name(e.actor),
                         "detail": e.detail or {}} for e in events],
            "trail": [{"at": e.at, "by": name(e.actor), "action": e.action} for e in trail]}


@bp.route("/<int:case_id>")
@login_required()
def view(case_id):
    with current_instance().session() as s:
        data = _case_view(s, case_id)
        audit.record(s, f"staff:{g.staff.id}", "case_open", f"case:{case_id}")
    return render_template("backoffice/case.html", **data, report=None)


@bp.route("/<int:case_id>/evidence.pdf", methods=["POST"])
@login_required()
def export(case_id):
    """The evidence PDF (the same as `kesu evidence export CASE_ID`), signed, audited."""
    from workers.capture.pdf import render
    instance = current_instance()
    lang = request.form.get("lang") if request.form.get("lang") in ("ja", "en") else "ja"
    try:
        pdf = render(instance, case_id, language=lang, actor=f"staff:{g.staff.id}")
    except LookupError:
        abort(404)
    return Response(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="kesu-case-{case_id}-evidence.pdf"',
        "Cache-Control": "no-store"})


@bp.route("/<int:case_id>/verify", methods=["POST"])
@login_required()
def verify(case_id):
    """Check an evidence PDF handed back (e.g. by a court): the same check as `kesu evidence verify`."""
    from workers.capture.pdf import verify_pdf
    instance = current_instance()
    upload = request.files.get("pdf")
    if upload is None or not upload.filename:
        flash(_("Choose the PDF to check."), "error")
        report = None
    else:
        data = upload.read()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "evidence.pdf"
            path.write_bytes(data)
            report = verify_pdf(path, instance.private_keys().verify_key)   # derived from the seed
        report["sha256"] = hashlib.sha256(data).hexdigest()
    with instance.session() as s:
        data = _case_view(s, case_id)
        if report is not None:
            audit.record(s, f"staff:{g.staff.id}", "evidence.verify", f"case:{case_id}", ok=report["ok"],
                         sha256=report["sha256"])
    return render_template("backoffice/case.html", **data, report=report)
