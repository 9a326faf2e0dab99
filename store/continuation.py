"""Her answer to the yearly question ("shall we go on?"): the rows it moves, and nothing else.

The retention job (workers.cases.retention) asks the question and holds cases nobody answers
for; her answer comes from the intake (a visit to her status page counts as "go on") or from
staff recording her reply. Both land here, so the intake needs no code that decrypts or sends.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from . import audit
from .models import Case, Schedule, Takedown, TakedownEvent, utcnow
from .vocabulary import OPEN_TAKEDOWN_STATUSES, RECHECK_EVERY_S

ACTOR = "retention"
HOLD_REASON = "continuation_unanswered"
CLOSE_REASON = "closed_by_victim"
ANSWERS = ("continue", "close")


def _now(now: datetime | None) -> datetime:
    return now or utcnow()


def hold_takedowns(s, case_id: int, reason: str, now: datetime) -> int:
    n = 0
    for td in s.execute(select(Takedown).where(Takedown.case_id == case_id,
                                               Takedown.status.in_(OPEN_TAKEDOWN_STATUSES))).scalars():
        s.add(TakedownEvent(takedown_id=td.id, kind="status", actor=ACTOR,
                            detail={"from": td.status, "to": "on_hold", "reason": reason}))
        td.status, td.updated_at = "on_hold", now
        for row in s.execute(select(Schedule).where(Schedule.kind == "recheck", Schedule.ref == str(td.id))).scalars():
            s.delete(row)
        n += 1
    return n


def release_takedowns(s, case_id: int, now: datetime) -> int:
    """Put takedowns this module held back to the status they had, and re-check them now."""
    n = 0
    for td in s.execute(select(Takedown).where(Takedown.case_id == case_id, Takedown.status == "on_hold")).scalars():
        ev = s.execute(select(TakedownEvent).where(TakedownEvent.takedown_id == td.id, TakedownEvent.kind == "status",
                                                   TakedownEvent.actor == ACTOR)
                       .order_by(TakedownEvent.id.desc())).scalars().first()
        if ev is None or (ev.detail or {}).get("to") != "on_hold":
            continue                         # held by staff, not by us: theirs to release
        before = (ev.detail or {}).get("from") or "ongoing"
        td.status, td.updated_at = before, now
        s.add(TakedownEvent(takedown_id=td.id, kind="status", actor=ACTOR,
                            detail={"from": "on_hold", "to": before, "reason": "continued"}))
        if before != "ongoing":
            have = s.execute(select(Schedule).where(Schedule.kind == "recheck", Schedule.ref == str(td.id))).scalars().first()
            if have is None:
                s.add(Schedule(kind="recheck", ref=str(td.id), due_at=now, interval_s=RECHECK_EVERY_S))
        n += 1
    return n


def answer(instance, case_id: int, reply: str, actor: str, now: datetime | None = None) -> dict:
    """Record her answer: "continue" (off hold, re-opened if closed) or "close" (her word)."""
    if reply not in ANSWERS:
        raise ValueError(f"answer must be one of {', '.join(ANSWERS)}")
    now = _now(now)
    with instance.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.bank is not None or case.status == "withdrawn":
            raise LookupError(f"no case {case_id}")
        released = held = 0
        if reply == "continue":
            case.continued_on = now.date()
            case.continuation_asked_on = None
            case.closed_on = None
            if case.held_on is not None:
                case.held_on = None
            released = release_takedowns(s, case.id, now)
        else:
            case.closed_on = now.date()
            case.continuation_asked_on = None
            case.held_on = None
            held = hold_takedowns(s, case.id, CLOSE_REASON, now)
        audit.record(s, actor[:100], f"case.{reply}", f"case:{case_id}", released=released, held=held)
        return {"case": case_id, "answer": reply, "released": released, "held": held}


def pending_question(instance, case_id: int) -> bool:
    """True when the yearly question waits for her answer (the status page can show it)."""
    with instance.session() as s:
        case = s.get(Case, case_id)
        return bool(case and case.bank is None and (case.continuation_asked_on or case.held_on)
                    and not case.closed_on)


def answered(instance, case_id: int, now: datetime | None = None) -> bool:
    """Hook for the intake: she opened her status page (authenticated), so she wants us to go
    on. Acts only when a question is pending or the case is on hold; returns whether it did."""
    if not pending_question(instance, case_id):
        return False
    answer(instance, case_id, "continue", "victim", now)
    return True
