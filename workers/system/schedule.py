"""The scheduler: timed work lives in the database; due rows become queue jobs.

Each pass also sweeps the job runs (workers.system.runs): every due, queued or abandoned run
without a live wake-up in Redis gets one, so a Redis flush or restart loses nothing.

A restart of Redis or of every process loses nothing: a due row stays due until
its job has been enqueued and its next due time written, in one transaction.
"""
import logging
import time
from datetime import timedelta

from sqlalchemy import select

from store.models import Schedule, utcnow
from workers.jobs import JOBS, enqueue
from workers.system import runs
from workers.system.queue import connection

log = logging.getLogger("kesu.scheduler")

# A Schedule row's kind is a job name of workers.jobs; recurring ones carry every_s there.
RECURRING: dict[str, int] = {name: job.every_s for name, job in JOBS.items() if job.every_s}


def ensure_recurring(instance) -> None:
    with instance.session() as s:
        have = set(s.execute(select(Schedule.kind).where(Schedule.kind.in_(RECURRING))).scalars())
        for kind, every in RECURRING.items():
            if kind not in have:
                s.add(Schedule(kind=kind, ref="", interval_s=every, due_at=utcnow() + timedelta(seconds=every)))


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
            # A deterministic job id: a scheduler restarted mid-way cannot enqueue the same run twice.
            job_id = f"sched-{row.id}-{int(row.due_at.timestamp())}"
            if not enqueue(instance.settings, row.kind, row.ref, conn=conn, job_id=job_id):
                raise ConnectionError("queue not reachable")
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
            runs.sweep(instance)        # what is due, queued or abandoned gets its wake-up again
        except Exception as exc:   # a broken row or a Redis restart must not stop the scheduler
            log.warning("scheduler pass failed (%s); retrying", runs.describe_error(exc)[:300])
        if once:
            return
        time.sleep(every)
