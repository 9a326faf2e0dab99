"""Removed within the legal deadline? One reading of each takedown, for the yearly statistics
(backoffice/stats.py) and the compliance prediction (workers/takedown/predict.py).

A takedown counts under the regime of its first legal notice (Takedown.regime, and that notice's
deadline, Takedown.legal_deadline_at): removed by the deadline is "within", removed later is
"after", still up past it is "overdue", not yet past it "pending". Time to removal runs from
that notice (the deadline minus the regime's window) to the check that found it gone.
A withdrawn case's takedowns count through their tallies (store.tally); they carry no times, so
the median leaves them out.
"""
from datetime import datetime
from statistics import median

from sqlalchemy import extract, func, select

from store.models import Domain, Takedown, TakedownTally, utcnow
from store.tally import LEGAL_OUTCOMES, legal_outcome
from workers.takedown import regimes


def hours_to_removal(regime_id: str, resolved_at: datetime | None, deadline: datetime) -> float | None:
    regime = regimes.get(regime_id)
    if resolved_at is None or regime is None or regime.window is None:
        return None
    return max((resolved_at - (deadline - regime.window)).total_seconds() / 3600, 0.0)


def rows(session, year: int | None = None, domain_id: int | None = None):
    """(regime, domain, status, resolved_at, legal_deadline_at) of every takedown with a legal clock."""
    stmt = (select(Takedown.regime, Domain.domain, Takedown.status, Takedown.resolved_at, Takedown.legal_deadline_at)
            .join(Domain, Domain.id == Takedown.domain_id, isouter=True)
            .where(Takedown.regime.is_not(None), Takedown.legal_deadline_at.is_not(None)))
    if year is not None:
        stmt = stmt.where(extract("year", Takedown.created_at) == year)
    if domain_id is not None:
        stmt = stmt.where(Takedown.domain_id == domain_id)
    return session.execute(stmt).all()


def summarise(found, now: datetime | None = None, kept: dict | None = None) -> dict:
    """{"requests", each outcome, "decided", "share_within", "median_hours"} over rows of rows(),
    plus `kept` counts {outcome: n} of withdrawn cases' tallies."""
    now = now or utcnow()
    out = {"requests": 0, **{k: 0 for k in LEGAL_OUTCOMES}}
    for legal, n in (kept or {}).items():
        out["requests"] += n
        out[legal] += n
    hours = []
    for regime_id, _domain, status, resolved_at, deadline in found:
        out["requests"] += 1
        out[legal_outcome(status, resolved_at, deadline, now)] += 1
        h = hours_to_removal(regime_id, resolved_at, deadline) if status == "removed" else None
        if h is not None:
            hours.append(h)
    decided = out["within"] + out["after"] + out["overdue"]        # its deadline has passed or it is gone
    out["decided"] = decided
    out["share_within"] = round(out["within"] / decided, 4) if decided else None
    out["median_hours"] = round(median(hours), 1) if hours else None
    return out


def kept_counts(session, year: int | None = None) -> list[tuple[str, str, str, int]]:
    """(regime, domain, outcome, count) kept from withdrawn cases."""
    stmt = (select(TakedownTally.regime, TakedownTally.domain, TakedownTally.legal, func.sum(TakedownTally.count))
            .where(TakedownTally.regime != "", TakedownTally.legal.in_(LEGAL_OUTCOMES))
            .group_by(TakedownTally.regime, TakedownTally.domain, TakedownTally.legal))
    if year is not None:
        stmt = stmt.where(TakedownTally.year == year)
    return [(r, d, o, int(n)) for r, d, o, n in session.execute(stmt).all()]


def by_regime(session, year: int | None = None, now: datetime | None = None) -> list[dict]:
    """Per regime (platform "" = all platforms) and per regime and platform."""
    groups: dict[tuple, list] = {}
    kept: dict[tuple, dict] = {}
    for row in rows(session, year):
        groups.setdefault((row[0], ""), []).append(row)
        groups.setdefault((row[0], row[1] or "(unknown)"), []).append(row)
    for regime_id, domain, legal, n in kept_counts(session, year):
        for key in ((regime_id, ""), (regime_id, domain or "(unknown)")):
            groups.setdefault(key, [])
            bucket = kept.setdefault(key, {})
            bucket[legal] = bucket.get(legal, 0) + n
    return [{"regime": regime_id, "platform": platform, **summarise(members, now, kept.get((regime_id, platform)))}
            for (regime_id, platform), members in sorted(groups.items())]
