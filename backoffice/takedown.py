"""Takedown items: the route to take, the notice to preview and send (or copy into a form),
marking a form request as sent, and the item's history. Staff see the URL and the category,
never the victim's details."""
import email
import email.policy

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import func, select

from backoffice import current_instance, login_required
from store import audit, people
from store.models import Case, Domain, Notice, Schedule, Takedown, TakedownEvent, utcnow
from store.vocabulary import LANGUAGES, TAKEDOWN_STATUSES
from workers.takedown import escalation, notify, predict, regimes

bp = Blueprint("takedown", __name__, url_prefix="/takedowns")
PAGE = 50


def route_labels() -> dict:
    return {"site": _("Site administrator"), "host": _("Hosting provider"), "registrar": _("Registrar"),
            "search_engine": _("Search engine delisting"), "hotline": _("Hotline"), "lawyer": _("Lawyer"),
            "regulator": _("Complaint to the regulator")}


def regime_name(regime_id: str | None) -> str:
    """A regime's name in the page's language (its file holds both)."""
    from flask_babel import get_locale
    regime = regimes.get(regime_id)
    if regime is None:
        return "—"
    return regime.name.get(str(get_locale() or "en"))


def regime_refusal(exc: "notify.MissingRegimeField") -> str:
    """A notice refused for a field its regime requires, in the staff member's language."""
    from flask_babel import get_locale
    lang = "ja" if str(get_locale() or "en") == "ja" else "en"
    missing = []
    for code in exc.codes:
        if code == "consent":
            missing.append(_("her consent to act on her behalf, taken at intake (this case does not show it)"))
        elif code == "capacity":
            missing.append(_("a valid notice_capacity (representative or lawyer)"))
        elif code.startswith("setting:"):
            missing.append(_("the setting %(name)s", name=f"KESU_{code.split(':', 1)[1].upper()}"))
        else:
            missing.append(_("the URL"))
    return _("Not ready: a notice under %(law)s must carry “%(field)s”; missing: %(missing)s.",
             law=regime_name(exc.regime), field=regimes.FIELDS[exc.field][lang], missing="; ".join(missing))


def refusal_text(exc: Exception) -> str:
    return regime_refusal(exc) if isinstance(exc, notify.MissingRegimeField) else str(exc)


def overdue_text(hours: float | None) -> str:
    if hours is None:
        return "—"
    if hours < 48:
        return _("%(hours)d hour(s)", hours=int(hours))
    return _("%(days)d day(s)", days=int(hours // 24))


def status_labels() -> dict:
    return {"ongoing": _("Ongoing"), "requested": _("Requested"), "still_up": _("Still up"),
            "partly_removed": _("Partly removed"), "removed": _("Removed"), "on_hold": _("On hold"),
            "unknown": _("Unknown (see why)")}


MIN_HISTORY = 5          # finished requests (at the widest level) before a number is shown at all


def prediction_text(prediction: dict | None) -> str:
    """An honest reading of workers.takedown.predict: with little history it says so instead of a
    confident percentage, and a number always comes with its range and what it rests on."""
    if not prediction:
        return _("No prediction yet")
    history = max([int(v.get("trials") or 0) for v in (prediction.get("levels") or {}).values()] or [0])
    if history < MIN_HISTORY:
        return _("Too little history to predict yet (%(n)d finished request(s) so far)", n=history)
    lo, hi = (prediction.get("interval") or [None, None])[:2]
    span = (_(" (likely between %(lo)d and %(hi)d %%)", lo=round(100 * lo), hi=round(100 * hi))
            if lo is not None and hi is not None else "")
    basis = _("; %(n)d earlier request(s) to this site", n=int(prediction.get("n") or 0))
    if prediction.get("p_within") is None:
        text = _("Likely to remove: %(percent)d %% (no timing data yet)",
                 percent=round(100 * prediction["p_remove"])) + span + basis
    else:
        text = _("Likely to remove: %(percent)d %% within %(days)d days",
                 percent=round(100 * prediction["p_within"]), days=prediction["within_days"]) + span + basis
    for regime_id, legal in sorted((prediction.get("regimes") or {}).items()):
        if legal.get("n_all", 0) >= MIN_HISTORY:
            text += "; " + _("within the legal deadline (%(regime)s): %(percent)d %% (%(n)d request(s) here)",
                             regime=regime_name(regime_id), percent=round(100 * legal["p_within"]), n=legal["n"])
    return text


@bp.route("/")
@login_required()
def index():
    status = request.args.get("status", "")
    page = max(1, request.args.get("page", 1, type=int))
    with current_instance().session() as s:
        stmt = select(Takedown, Domain.domain).join(Domain, Domain.id == Takedown.domain_id, isouter=True)
        if status in TAKEDOWN_STATUSES:
            stmt = stmt.where(Takedown.status == status)
        total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar()
        rows = s.execute(stmt.order_by(Takedown.updated_at.desc(), Takedown.id.desc())
                         .offset((page - 1) * PAGE).limit(PAGE)).all()
    return render_template("backoffice/takedowns.html", rows=rows, status=status, statuses=TAKEDOWN_STATUSES,
                           status_labels=status_labels(), route_labels=route_labels(), total=total, page=page,
                           per_page=PAGE)


@bp.route("/overdue")
@login_required()
def overdue():
    """What is past its deadline and still up, by how long, per platform."""
    with current_instance().session() as s:
        rows = escalation.overdue(s)
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row["domain"] or "—", []).append(row)
    return render_template("backoffice/takedowns_overdue.html", groups=groups, total=len(rows),
                           status_labels=status_labels(), route_labels=route_labels(), regime_name=regime_name,
                           overdue_text=overdue_text)


@bp.route("/<int:takedown_id>")
@login_required()
def item(takedown_id):
    instance = current_instance()
    with instance.session() as s:
        td = s.get(Takedown, takedown_id)
        if td is None:
            abort(404)
        case = s.get(Case, td.case_id)
        domain = s.get(Domain, td.domain_id) if td.domain_id else None
        category = case.category if case else None
        steps = predict.recommend_routes(domain, category, domain.prediction if domain else None)
        chosen = request.args.get("route") or td.proposal or td.route or predict.first_route(steps)
        if chosen not in [st["route"] for st in steps]:
            chosen = predict.first_route(steps)
        # the notice's language (not the page's: ?lang= is the staff member's own language)
        lang = request.args.get("notice_lang")
        if lang not in LANGUAGES:
            lang = notify.default_language(domain)
        preview, refused = None, None
        try:
            preview = notify.render(instance, s, td, chosen, lang)
        except notify.MissingSettings as exc:
            refused = _("Notices are refused until these settings are set: %(names)s.",
                        names=", ".join(f"KESU_{m.upper()}" for m in exc.missing))
        except notify.MissingRegimeField as exc:
            refused = regime_refusal(exc)
        except notify.RouteRefused as exc:
            refused = str(exc)
        notices = s.execute(select(Notice).where(Notice.takedown_id == td.id, Notice.channel != "victim")
                            .order_by(Notice.id.desc())).scalars().all()
        events = s.execute(select(TakedownEvent).where(TakedownEvent.takedown_id == td.id)
                           .order_by(TakedownEvent.id.desc())).scalars().all()
        next_check = s.execute(select(Schedule.due_at).where(Schedule.ref == str(td.id),
                                                             Schedule.kind.in_(("recheck", "reupload")))).scalar()
        name = people.describer(s)
        actors = {e.actor: name(e.actor) for e in events}
        # escalation: the routes once a legal deadline passes, and the package asked for
        escalations = escalation.options(s, td, lang)
        target = request.args.get("escalate") or (td.proposal if td.proposal in {o.target for o in escalations} else None)
        package, package_refused = None, None
        if target:
            try:
                package = escalation.package(instance, s, td, target, lang)
            except notify.RouteRefused as exc:
                package_refused = str(exc)
        applicable = regimes.strongest_notice_regime(domain, category, chosen)[1]
        audit.record(s, f"staff:{g.staff.id}", "takedown_open", f"takedown:{td.id}")
    return render_template("backoffice/takedown_item.html", td=td, domain=domain, category=category, steps=steps,
                           chosen=chosen, lang=lang, preview=preview, refused=refused, notices=notices,
                           events=events, actors=actors, next_check=next_check, route_labels=route_labels(),
                           status_labels=status_labels(), prediction=prediction_text(domain.prediction if domain else None),
                           escalations=escalations, target=target, package=package, package_refused=package_refused,
                           applicable=applicable, regime_name=regime_name,
                           overdue_h=escalation.overdue_hours(td.deadline_at) if td.deadline_at and td.deadline_at
                           <= utcnow() else None, overdue_text=overdue_text)


@bp.route("/<int:takedown_id>/send", methods=["POST"])
@login_required("staff")
def send(takedown_id):
    instance = current_instance()
    route = request.form.get("route", "")
    lang = request.form.get("lang", "ja")
    address = request.form.get("address", "").strip() or None
    again = request.form.get("again") == "1"
    lang = lang if lang in LANGUAGES else "ja"
    if request.form.get("confirm") != "1":
        # the confirmation step: who receives it, in which language, what it says
        with instance.session() as s:
            td = s.get(Takedown, takedown_id)
            if td is None:
                abort(404)
            try:
                preview = notify.render(instance, s, td, route, lang)
            except notify.RouteRefused as exc:
                flash(_("Not sent: %(reason)s", reason=refusal_text(exc)), "error")
                return redirect(url_for("takedown.item", takedown_id=takedown_id, route=route, notice_lang=lang))
        return render_template("backoffice/takedown_confirm.html", td=td, route=route, lang=lang, address=address,
                               again=again, preview=preview, route_labels=route_labels())
    try:
        notice_id = notify.prepare(instance, takedown_id, route, lang,
                                   actor=f"staff:{g.staff.id}", address=address, again=again)
    except KeyError:
        abort(404)
    except (notify.RouteRefused, ValueError) as exc:
        flash(_("Not sent: %(reason)s", reason=refusal_text(exc)), "error")
        return redirect(url_for("takedown.item", takedown_id=takedown_id, route=route, notice_lang=lang))
    with instance.session() as s:
        notice = s.get(Notice, notice_id)
        audit.record(s, f"staff:{g.staff.id}", "notice_prepare", f"takedown:{takedown_id}", notice=notice_id,
                     route=route)
        state, channel = notice.state, notice.channel
    if channel == "email" and state == "ready":
        queued = notify.enqueue(instance, notice_id)
        flash(_("The notice is being sent.") if queued else
              _("The notice is saved and will be sent when the queue is back."), "ok")
    elif state in notify.SENT_STATES:
        flash(_("This notice was already sent."), "ok")
    else:
        flash(_("Copy the text into the contact form, then mark it as sent."), "ok")
    return redirect(url_for("takedown.item", takedown_id=takedown_id, route=route, notice_lang=lang) + "#notices")


@bp.route("/<int:takedown_id>/escalate", methods=["POST"])
@login_required("staff")
def escalate(takedown_id):
    """Save an escalation package (copy-ready text) for staff to paste and mark as sent."""
    instance = current_instance()
    target = request.form.get("target", "")
    lang = request.form.get("lang", "ja")
    lang = lang if lang in LANGUAGES else "ja"
    try:
        notice_id = escalation.prepare(instance, takedown_id, target, lang, actor=f"staff:{g.staff.id}")
    except KeyError:
        abort(404)
    except notify.RouteRefused as exc:
        flash(_("Not saved: %(reason)s", reason=str(exc)), "error")
        return redirect(url_for("takedown.item", takedown_id=takedown_id))
    with instance.session() as s:
        audit.record(s, f"staff:{g.staff.id}", "escalation_prepare", f"takedown:{takedown_id}", notice=notice_id,
                     route=target)
    flash(_("Copy the text where it goes, then mark it as sent."), "ok")
    return redirect(url_for("takedown.item", takedown_id=takedown_id, escalate=target, notice_lang=lang) + "#notices")


@bp.route("/<int:takedown_id>/notices/<int:notice_id>/sent", methods=["POST"])
@login_required("staff")
def mark_sent(takedown_id, notice_id):
    instance = current_instance()
    with instance.session() as s:
        notice = s.get(Notice, notice_id)
        if notice is None or notice.takedown_id != takedown_id:
            abort(404)
    try:
        notify.mark_sent(instance, notice_id, actor=f"staff:{g.staff.id}")
    except ValueError as exc:
        flash(str(exc), "error")
    else:
        with instance.session() as s:
            audit.record(s, f"staff:{g.staff.id}", "notice_mark_sent", f"takedown:{takedown_id}", notice=notice_id)
        flash(_("Marked as sent. The URL will be checked again."), "ok")
    return redirect(url_for("takedown.item", takedown_id=takedown_id) + "#history")


@bp.route("/<int:takedown_id>/notices/<int:notice_id>")
@login_required()
def notice_text(takedown_id, notice_id):
    """The archived copy of a notice as it was made (decrypted in memory for staff)."""
    instance = current_instance()
    with instance.session() as s:
        notice = s.get(Notice, notice_id)
        if notice is None or notice.takedown_id != takedown_id or notice.channel == "victim" or not notice.archived:
            abort(404)
        raw = notify.open_archive(instance, notice)
        audit.record(s, f"staff:{g.staff.id}", "notice_open", f"takedown:{takedown_id}", notice=notice_id)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return render_template("backoffice/takedown_notice.html", notice=notice, subject=msg["Subject"],
                           body=msg.get_content(), takedown_id=takedown_id)


@bp.route("/<int:takedown_id>/check", methods=["POST"])
@login_required("staff")
def check_now(takedown_id):
    """Ask for a re-check at the scheduler's next pass."""
    with current_instance().session() as s:
        td = s.get(Takedown, takedown_id)
        if td is None:
            abort(404)
        kind = "reupload" if td.status == "removed" else "recheck"
        notify.schedule_recheck(s, td.id, utcnow()) if kind == "recheck" else None
        row = s.execute(select(Schedule).where(Schedule.kind == kind, Schedule.ref == str(td.id))).scalars().first()
        if row is not None:
            row.due_at = utcnow()
    flash(_("The URL will be checked within a minute."), "ok")
    return redirect(url_for("takedown.item", takedown_id=takedown_id))


@bp.route("/<int:takedown_id>/status", methods=["POST"])
@login_required("staff")
def set_status(takedown_id):
    """Staff put an item on hold (or back to ongoing)."""
    status = request.form.get("status")
    if status not in ("on_hold", "ongoing"):
        abort(400)
    with current_instance().session() as s:
        td = s.get(Takedown, takedown_id)
        if td is None:
            abort(404)
        before, td.status, td.updated_at = td.status, status, utcnow()
        notify.event(s, td.id, "status", f"staff:{g.staff.id}", before=before, status=status)
        audit.record(s, f"staff:{g.staff.id}", "takedown_status", f"takedown:{td.id}", status=status)
    return redirect(url_for("takedown.item", takedown_id=takedown_id))
