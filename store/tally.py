"""Yearly takedown counts that outlive a withdrawal (DESIGN.md §3: statistics survive)."""
from collections import Counter
from datetime import datetime

from sqlalchemy import select

from .models import Case, Domain, Takedown, TakedownTally, utcnow

LEGAL_OUTCOMES = ("within", "after", "overdue", "pending")


def legal_outcome(status: str, resolved_at: datetime | None, deadline: datetime, now: datetime) -> str:
    """Under a legal deadline: removed "within" it or "after" it, still up and "overdue", or "pending"."""
    if status == "removed" and resolved_at is not None:
        return "within" if resolved_at <= deadline else "after"
    return "overdue" if now > deadline else "pending"


def tally(session, case_id: int) -> int:
    """Keep the counts of a case's takedowns before a withdrawal deletes them (store.cases.withdraw
    calls this first, in the same transaction). Only year, category, domain name, status and, under
    a legal regime, which one and whether it was removed within its deadline."""
    case = session.get(Case, case_id)
    category = (case.category if case else "") or ""
    now = utcnow()
    rows = session.execute(select(Takedown.created_at, Domain.domain, Takedown.status, Takedown.regime,
                                  Takedown.resolved_at, Takedown.legal_deadline_at)
                           .join(Domain, Domain.id == Takedown.domain_id, isouter=True)
                           .where(Takedown.case_id == case_id)).all()
    counts = Counter()
    for created, domain, status, regime, resolved, deadline in rows:
        legal = legal_outcome(status, resolved, deadline, now) if regime and deadline else ""
        counts[(created.year, domain or "", status, (regime or "") if legal else "", legal)] += 1
    for (year, domain, status, regime, legal), n in counts.items():
        session.add(TakedownTally(year=year, category=category, domain=domain, status=status, count=n,
                                  regime=regime, legal=legal))
    return len(rows)
