"""When each domain is patrolled: weights from matches and reports, due domains, and filling the
crawl queue without ever queueing a domain twice."""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

from sqlalchemy import func, select

from store.models import Domain, Match, Media, Takedown, utcnow
from store.urls import site_of
from workers.capture.patrol.config import setting

# --- scheduling --------------------------------------------------------------------------------

_reported_cache: tuple[float, dict] = (0.0, {})


def _reported_hosts(instance) -> dict[str, int]:
    """host -> how many URLs victims reported there (their cases' known URLs, read in memory
    with the case keys; nothing is written). Empty when the keys are locked."""
    global _reported_cache
    if time.monotonic() - _reported_cache[0] < 600 and _reported_cache[0]:
        return _reported_cache[1]
    out: dict[str, int] = {}
    try:
        from store.models import Case
        from workers.cases.takein import case_details
        with instance.session() as s:
            ids = list(s.execute(select(Case.id).where(Case.status != "withdrawn", Case.details.is_not(None)))
                       .scalars())
        for cid in ids:
            details = case_details(instance, cid) or {}
            for u in details.get("known_urls") or []:
                host = site_of(u)
                if host:
                    out[host] = out.get(host, 0) + 1
    except Exception:
        out = {}
    _reported_cache = (time.monotonic(), out)
    return out


def weights(instance) -> dict[int, float]:
    """domain id -> weight >= 1: more for domains where matches were found (confirmed ones count
    double, rejected ones not at all) and where victims or staff reported URLs."""
    with instance.session() as s:
        domains = s.execute(select(Domain.id, Domain.domain, Domain.patrol_seeds)).all()
        matched = s.execute(select(Media.url, Match.state).join(Match, Match.media_id == Media.id)
                            .where(Match.state != "rejected")).all()
        takedowns = dict(s.execute(select(Takedown.domain_id, func.count()).where(Takedown.domain_id.is_not(None))
                                   .group_by(Takedown.domain_id)).all())
    host_to_id: dict[str, int] = {}
    for did, name, seeds in domains:
        host_to_id[name.lower()] = did
        for u in seeds or []:
            host_to_id.setdefault(site_of(u), did)
    found: dict[int, float] = {}
    for url, state in matched:
        did = host_to_id.get(site_of(url))
        if did is not None:
            found[did] = found.get(did, 0) + (2.0 if state == "confirmed" else 1.0)
    reported: dict[int, int] = {did: n for did, n in takedowns.items()}
    for host, n in _reported_hosts(instance).items():
        did = host_to_id.get(host)
        if did is not None:
            reported[did] = reported.get(did, 0) + n
    out = {}
    for did, *_ in domains:
        w = 1.0 + math.log2(1 + found.get(did, 0)) + math.log2(1 + reported.get(did, 0))
        out[did] = min(w, 8.0)
    return out


def interval(settings, d: Domain, weight: float = 1.0) -> int:
    every = d.patrol_every_s or setting(settings, "patrol_every_s")
    return int(max(min(every, setting(settings, "patrol_min_every_s")), every / max(1.0, weight)))


def due(instance, now=None, limit: int | None = None) -> list[dict]:
    """Domains due for a patrol, most due first: [{"domain_id", "due_at", "weight"}]."""
    now = now or utcnow()
    w = weights(instance)
    out = []
    with instance.session() as s:
        rows = s.execute(select(Domain).where((Domain.patrol_enabled.is_(None)) | (Domain.patrol_enabled.is_(True)))
                         ).scalars().all()
        for d in rows:
            if d.patrol_lease_until is not None and d.patrol_lease_until > now:
                continue
            weight = w.get(d.id, 1.0)
            if d.last_patrol_at is None:
                at = d.next_patrol_at or datetime(2000, 1, 1)
            else:
                at = d.last_patrol_at + timedelta(seconds=interval(instance.settings, d, weight))
                if d.next_patrol_at is not None:
                    at = min(at, d.next_patrol_at)
            if at <= now:
                out.append({"domain_id": d.id, "due_at": at, "weight": weight, "domain": d.domain})
    out.sort(key=lambda r: (r["due_at"], -r["weight"], r["domain_id"]))
    return out[:limit] if limit else out


def queue_depth(settings) -> int | None:
    """Jobs waiting on the crawl queue (None when Redis is not reachable)."""
    try:
        from workers.system.queue import connection, queue
        conn = connection(settings)
        conn.ping()
        return queue(settings, "crawl", conn).count
    except Exception:
        return None


def fill(instance, now=None) -> list[int]:
    """Put due domains on the crawl queue (most due first) up to the queue depth; returns their ids."""
    from workers import jobs
    from workers.system.queue import connection, queue, workers_listening
    settings = instance.settings
    now = now or utcnow()
    conn = connection(settings)
    q = queue(settings, "crawl", conn)
    waiting = sum(1 for jid in q.job_ids if jid.startswith("patrol-"))
    depth = setting(settings, "patrol_queue_depth") or max(4, 2 * workers_listening(settings, "crawl"))
    room = depth - waiting
    if room <= 0:
        return []
    lease = timedelta(seconds=setting(settings, "patrol_seconds") * 2 + 3600)
    out = []
    for row in due(instance, now, room):
        with instance.session() as s:
            d = s.get(Domain, row["domain_id"])
            if d.patrol_lease_until is not None and d.patrol_lease_until > now:
                continue
            d.patrol_lease_until = now + lease
        jobs.enqueue(settings, "patrol", str(row["domain_id"]), conn=q.connection,
                     job_id=f"patrol-{row['domain_id']}-{int(now.timestamp())}",
                     job_timeout=int(setting(settings, "patrol_seconds")) + 300)
        out.append(row["domain_id"])
    return out


# --- RQ entry points (arguments are ids) ---------------------------------------------------------

def fill_job(_ref: str = "") -> list[int]:
    from workers.system.context import instance
    return fill(instance())
