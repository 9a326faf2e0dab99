"""Yearly takedown counts that outlive a withdrawal (DESIGN.md §3: statistics survive)."""
from sqlalchemy import extract, func, select

from .models import Case, Domain, Takedown, TakedownTally


def tally(session, case_id: int) -> int:
    """Keep the counts of a case's takedowns before a withdrawal deletes them (store.cases.withdraw
    calls this first, in the same transaction). Only year, category, domain name and status."""
    case = session.get(Case, case_id)
    category = (case.category if case else "") or ""
    y = extract("year", Takedown.created_at)
    rows = session.execute(select(y, Domain.domain, Takedown.status, func.count())
                           .join(Domain, Domain.id == Takedown.domain_id, isouter=True)
                           .where(Takedown.case_id == case_id)
                           .group_by(y, Domain.domain, Takedown.status)).all()
    for year, domain, status, n in rows:
        session.add(TakedownTally(year=int(year), category=category, domain=domain or "", status=status, count=int(n)))
    return sum(int(r[3]) for r in rows)
