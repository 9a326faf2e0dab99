"""The patrol page's numbers, and the crawl workers a patrol load needs."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from store.models import Domain, Match, PatrolRun, utcnow
from workers.capture.patrol.schedule import due, queue_depth

# --- the overview (the back office's patrol page) --------------------------------------------------

def overview(instance, now=None, days: int = 14, limit: int = 200) -> dict:
    now = now or utcnow()
    with instance.session() as s:
        day = func.date(PatrolRun.started_at)
        per_day = s.execute(select(day, func.sum(PatrolRun.pages), func.sum(PatrolRun.media),
                                   func.sum(PatrolRun.matches), func.sum(PatrolRun.bytes), func.sum(PatrolRun.errors),
                                   func.sum(PatrolRun.blocked), func.count())
                            .where(PatrolRun.started_at >= now - timedelta(days=days))
                            .group_by(day).order_by(day)).all()
        total_domains = int(s.execute(select(func.count()).select_from(Domain)).scalar() or 0)
        latest = (select(PatrolRun.domain_id, func.max(PatrolRun.id).label("rid")).group_by(PatrolRun.domain_id)
                  .subquery())
        rows = s.execute(select(Domain, PatrolRun).join(latest, latest.c.domain_id == Domain.id)
                         .join(PatrolRun, PatrolRun.id == latest.c.rid)
                         .order_by((PatrolRun.errors + PatrolRun.blocked).desc(), PatrolRun.started_at.desc())
                         .limit(limit)).all()
        matches_24h = int(s.execute(select(func.count()).select_from(Match)
                                    .where(Match.created_at >= now - timedelta(days=1))).scalar() or 0)
        due_now = len(due(instance, now))
    table = [{"domain_id": d.id, "domain": d.domain, "last_run": r.started_at.isoformat(timespec="minutes"),
              "status": r.status, "pages": r.pages, "unchanged": r.unchanged, "bytes": r.bytes, "media": r.media,
              "matches": r.matches, "errors": r.errors, "blocked": r.blocked, "seconds": round(r.seconds, 1),
              "next": d.next_patrol_at.isoformat(timespec="minutes") if d.next_patrol_at else "",
              "problems": [e.get("why", "") for e in ((r.detail or {}).get("errors") or [])][:3]
              + [b.get("why", "") for b in ((r.detail or {}).get("blocked") or [])][:3]}
             for d, r in rows]
    return {
        "domains": total_domains,
        "days": [{"day": str(d), "pages": int(p or 0), "media": int(m or 0), "matches": int(x or 0),
                  "bytes": int(b or 0), "errors": int(e or 0), "blocked": int(bl or 0), "runs": int(n or 0)}
                 for d, p, m, x, b, e, bl, n in per_day],
        "matches_24h": matches_24h, "due_now": due_now, "queue_depth": queue_depth(instance.settings),
        "table": table,
    } | _patrolled_counts(instance, now)


def _patrolled_counts(instance, now) -> dict:
    with instance.session() as s:
        def n(since):
            return int(s.execute(select(func.count(func.distinct(PatrolRun.domain_id)))
                                 .where(PatrolRun.started_at >= since)).scalar() or 0)
        return {"patrolled_24h": n(now - timedelta(days=1)), "patrolled_7d": n(now - timedelta(days=7))}


# --- the workers the default budgets need --------------------------------------------------------

def workers_needed(domains: int, pages_per_run: float, runs_per_day: float, pages_per_hour_per_worker: float) -> float:
    """Crawl workers to patrol `domains` at the given cost: domains x pages x runs / (pages/h x 24)."""
    if pages_per_hour_per_worker <= 0:
        return float("inf")
    return domains * pages_per_run * runs_per_day / (pages_per_hour_per_worker * 24.0)
