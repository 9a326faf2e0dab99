"""The scheduler: timed work lives in the database; due rows become queue jobs.

A restart of Redis or of every process loses nothing: a due row stays due until
its job has been enqueued and its next due time written, in one transaction.
"""
import importlib
import logging
import time
from datetime import timedelta

from sqlalchemy import select

from store.models import Schedule, utcnow

from .queue import connection, queue

log = logging.getLogger("kesu.scheduler")

# kind -> (queue, "module:function"); a job receives the schedule's ref and payload ids only.
JOBS: dict[str, tuple[str, str]] = {}


def register(kind: str, queue_name: str, target: str, every_s: int | None = None) -> None:
    """A kind of scheduled job; with every_s, a recurring one that ensure_recurring() creates."""
    JOBS[kind] = (queue_name, target)
    if every_s:
        RECURRING[kind] = every_s


RECURRING: dict[str, int] = {}


def ensure_recurring(instance) -> None:
    with instance.session() as s:
        have = set(s.execute(select(Schedule.kind).where(Schedule.kind.in_(RECURRING))).scalars())
        for kind, every in RECURRING.items():
            if kind not in have:
                s.add(Schedule(kind=kind, ref="", interval_s=every, due_at=utcnow() + timedelta(seconds=every)))


register("purge_sessions", "default", "workers.housekeeping:purge_sessions", every_s=3600)
register("recheck", "default", "workers.recheck:recheck")
register("reupload", "default", "workers.recheck:watch")
register("notice_sweep", "default", "workers.notify:sweep", every_s=120)
register("predict_all", "default", "workers.predict:update_all", every_s=86400)
register("patrol_fill", "default", "workers.patrol:fill_job", every_s=60)
register("retention", "default", "workers.retention:run", every_s=86400)
register("match_refresh", "match", "workers.match:refresh_job", every_s=30)
register("match_retrain", "match", "workers.match:retrain_job", every_s=86400)


def run_due(instance, now=None) -> int:
    now = now or utcnow()
    conn = connection(instance.settings)
    done = 0
    with instance.session() as s:
        rows = s.execute(select(Schedule).where(Schedule.due_at <= now).order_by(Schedule.due_at)
                         .with_for_update(skip_locked=True)).scalars().all()
        for row in rows:
            if row.kind not in JOBS:
                continue
            queue_name, target = JOBS[row.kind]
            module, func = target.split(":")
            job_func = getattr(importlib.import_module(module), func)
            # A deterministic job id: a scheduler restarted mid-way cannot enqueue the same run twice.
            job_id = f"sched-{row.id}-{int(row.due_at.timestamp())}"
            queue(instance.settings, queue_name, conn).enqueue(job_func, row.ref, job_id=job_id)
            row.last_run_at = now
            if row.interval_s:
                row.due_at = now + timedelta(seconds=row.interval_s)
            else:
                s.delete(row)
            done += 1
    return done


def loop(instance, once: bool = False, every: float = 5.0) -> None:
    ensure_recurring(instance)
    while True:
        try:
            n = run_due(instance)
            if n:
                log.info("enqueued %d scheduled job(s)", n)
        except Exception:   # a broken row or a Redis restart must not stop the scheduler
            log.exception("scheduler pass failed; retrying")
        if once:
            return
        time.sleep(every)
