"""Past a legal deadline with the content still up: what to do next, and its package.

The routes come from the regime the first legal notice cited (regimes/*.toml `escalation`):
a complaint to the regulator where one exists (the FTC, a DSA coordinator), a search-engine
delisting request (Google's and Bing's forms for non-consensual intimate images), the hosting
provider or registrar; a report to eSafety where that regime covers the site; for a minor,
the hotline only. Each package is copy-ready text with the evidence summary and the timeline
of requests; staff paste it where it goes and mark it sent (a Notice row of channel "form",
its text sealed to the case like every notice).
"""
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from store.models import Case, Domain, Notice, Takedown, TakedownEvent, utcnow
from store.vocabulary import LANGUAGES, OPEN_TAKEDOWN_STATUSES
from workers.takedown import notify, regimes

OVERDUE_STATUSES = tuple(s for s in OPEN_TAKEDOWN_STATUSES if s != "ongoing")


@dataclass
class Option:
    target: str                          # regulator|search_engine|host|registrar|hotline
    name: str
    regime: str | None
    url: str = ""
    note: str = ""
    forms: list = field(default_factory=list)
    done: bool = False                   # a package for it was already marked sent


def options(session, td: Takedown, language: str = "en") -> list[Option]:
    """The escalation routes for this takedown, in the order its regime lists them."""
    case = session.get(Case, td.case_id)
    category = case.category if case else None
    domain = session.get(Domain, td.domain_id) if td.domain_id else None
    sent = set(session.execute(select(Notice.route).where(Notice.takedown_id == td.id,
                                                          Notice.state.in_(notify.SENT_STATES))).scalars())
    out: list[Option] = []
    if category == "minor":
        hotlines = notify.route_address(domain, "hotline", domain.country if domain else None)[2]
        return [Option("hotline", " / ".join(n for n, _ in hotlines), None, forms=hotlines, done="hotline" in sent)]
    sources = ([regimes.get(td.regime)] if td.regime else []) + regimes.reports(domain, category)
    for regime in [r for r in sources if r is not None]:
        for step in regime.escalation:
            if any(o.target == step.target for o in out):
                continue
            forms = ([(step.name, step.url)] if step.url else [])
            if step.target == "search_engine":
                forms = list(notify.SEARCH_FORMS)
            out.append(Option(step.target, step.name, regime.id, url=step.url,
                              note=step.note.get(language) if step.note else "", forms=forms,
                              done=step.target in sent))
    return out


def first_open(session, td: Takedown) -> str | None:
    """The first escalation route not yet taken (the proposal once the legal deadline passes)."""
    for option in options(session, td):
        if not option.done:
            return option.target
    return None


def overdue_hours(deadline: datetime | None, now: datetime | None = None) -> float | None:
    if deadline is None:
        return None
    return max(((now or utcnow()) - deadline).total_seconds() / 3600, 0.0)


def overdue_count(session, now: datetime | None = None) -> int:
    return session.execute(select(func.count()).select_from(Takedown)
                           .where(Takedown.deadline_at.is_not(None), Takedown.deadline_at <= (now or utcnow()),
                                  Takedown.status.in_(OVERDUE_STATUSES))).scalar()


def overdue(session, now: datetime | None = None) -> list[dict]:
    """Every open takedown past its route's deadline, by platform then how long overdue."""
    now = now or utcnow()
    rows = session.execute(select(Takedown, Domain).join(Domain, Domain.id == Takedown.domain_id, isouter=True)
                           .where(Takedown.deadline_at.is_not(None), Takedown.deadline_at <= now,
                                  Takedown.status.in_(OVERDUE_STATUSES))).all()
    out = [{"takedown": td, "domain": dom.domain if dom else "", "regime": regimes.get(td.regime),
            "hours": overdue_hours(td.deadline_at, now)} for td, dom in rows]
    return sorted(out, key=lambda r: (r["domain"], -r["hours"]))


TIMELINE_TEXT = {
    "en": {"sent": "request {id} sent: {route}{to}", "form": " (contact form)", "under": ", under {name}",
           "deadline": ", legal deadline {at:%Y-%m-%d %H:%M} UTC", "check": "checked: {outcome} ({why})",
           "proposal": "next route proposed: {route}"},
    "ja": {"sent": "依頼 {id} 送付：{route}{to}", "form": "（問い合わせフォーム）", "under": "、{name}に基づく",
           "deadline": "、法定期限 {at:%Y-%m-%d %H:%M}（UTC）", "check": "確認：{outcome}（{why}）",
           "proposal": "次の手段を提案：{route}"},
}


def timeline(session, td: Takedown, language: str = "en") -> list[tuple[datetime, str]]:
    """What was asked of whom and when, and what each check saw (no content, no victim)."""
    t = TIMELINE_TEXT["ja" if language == "ja" else "en"]
    items = []
    for n in session.execute(select(Notice).where(Notice.takedown_id == td.id, Notice.channel != "victim",
                                                  Notice.sent_at.is_not(None)).order_by(Notice.sent_at)).scalars():
        regime = regimes.get(n.regime)
        text = t["sent"].format(id=n.id, route=n.route, to=f" ({n.recipient})" if n.recipient else t["form"])
        if regime is not None:
            text += t["under"].format(name=regime.name.get(language))
        if n.deadline_at:
            text += t["deadline"].format(at=n.deadline_at)
        items.append((n.sent_at, text))
    for e in session.execute(select(TakedownEvent).where(TakedownEvent.takedown_id == td.id,
                                                         TakedownEvent.kind.in_(("check", "proposal")))
                             .order_by(TakedownEvent.id)).scalars():
        if e.kind == "check":
            items.append((e.at, t["check"].format(outcome=e.detail.get("outcome"), why=e.detail.get("why", ""))))
        else:
            items.append((e.at, t["proposal"].format(route=e.detail.get("route"))))
    return sorted(items, key=lambda i: i[0])


def package(instance, session, td: Takedown, target: str, language: str) -> dict:
    """{"subject", "body", "option"}: the copy-ready text for one escalation route."""
    option = next((o for o in options(session, td, language) if o.target == target), None)
    if option is None:
        raise notify.RouteRefused(f"no escalation route {target!r} for this takedown")
    language = language if language in LANGUAGES else "en"
    regime = regimes.get(td.regime)
    context = notify.context_for(instance, session, td, target if target in notify.RECIPIENTS else "site")
    context.update({
        "target": option, "regime": regime, "language": language,
        "law": regime.law.get(language) if regime else "",
        "counted_from": regime.deadline.counted_from.get(language) if regime else "",
        "legal_deadline": td.legal_deadline_at, "overdue_h": overdue_hours(td.legal_deadline_at or td.deadline_at),
        "status": td.status, "timeline": timeline(session, td, language),
    })
    text = notify.render_template(f"notices/{language}/escalation.txt", context)
    first, _, body = text.partition("\n")
    return {"subject": re.sub(r"^(Subject|件名):\s*", "", first).strip(), "body": body.lstrip("\n"), "option": option}


def prepare(instance, takedown_id: int, target: str, language: str, actor: str) -> int:
    """The package as a Notice row (channel form) for staff to paste and mark sent; made once."""
    with instance.session() as s:
        td = s.get(Takedown, takedown_id, with_for_update=True)
        if td is None:
            raise KeyError(takedown_id)
        existing = s.execute(select(Notice).where(Notice.takedown_id == td.id, Notice.route == target,
                                                  Notice.state == "form_ready")).scalars().first()
        if existing is not None:
            return existing.id
        p = package(instance, s, td, target, language)
        notice = Notice(takedown_id=td.id, route=target, recipient="", language=language, channel="form",
                        state="form_ready", regime=td.regime)
        s.add(notice)
        s.flush()
        notice.message_id = f"<kesu.{notice.id}.{secrets.token_hex(6)}@{notify.mail_domain(instance)}>"
        msg = notify.message(instance, "(contact form)", p["subject"], p["body"], notice.message_id)
        notice.archived = notify.archive_for_case(instance, s, td.case_id, notice.id,
                                                  msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
        notify.event(s, td.id, "escalation", actor, notice=notice.id, route=target, regime=td.regime)
        return notice.id
