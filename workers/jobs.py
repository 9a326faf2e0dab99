"""Every job kesu runs, named once: its queue, the function RQ calls, and its defaults.

Jobs are enqueued by name through `enqueue` (the queue, the scheduler, the apps and the tests
use this one table). Targets are dotted strings, so the intake can hand work on without
importing the code that runs it. Arguments are internal ids, never signals (DESIGN.md §3).
A tracked job's work is a database row first (a JobRun, workers.system.runs): `enqueue` writes
it, then sends the wake-up; when Redis cannot be reached it says so and the row waits for the
scheduler's sweep. RQ runs a tracked job through `workers.system.deliver.run`, which claims the row
(lease, attempt) before calling the function named here. Untracked jobs are recurring (their
Schedule row is the truth) or matcher wake-ups that the matcher's own refresh makes good.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("kesu.jobs")

WEEK_S = 7 * 86400


@dataclass(frozen=True)
class Job:
    queue: str                      # default | crawl | match
    target: str                     # "package.module.function", as RQ names it
    every_s: int | None = None      # recurring: the scheduler keeps one Schedule row for it
    options: dict = field(default_factory=dict)   # RQ enqueue options (timeouts, TTLs)
    tracked: bool = False           # a JobRun row per (name, first argument): leases, attempts, sweep


JOBS: dict[str, Job] = {
    # the victim's case
    "take_in": Job("default", "workers.cases.takein.take_in", options={"result_ttl": 0, "failure_ttl": WEEK_S}, tracked=True),
    "case_added": Job("match", "workers.matching.matcher.case_added", options={"result_ttl": 0, "failure_ttl": WEEK_S}, tracked=True),
    "case_withdrawn": Job("match", "workers.matching.matcher.case_withdrawn",
                          options={"result_ttl": 0, "failure_ttl": WEEK_S}),
    # capture
    "crawl": Job("crawl", "workers.capture.crawl.run_job", options={"result_ttl": 3600, "failure_ttl": WEEK_S}, tracked=True),
    "patrol": Job("crawl", "workers.capture.patrol.run_job", options={"result_ttl": 3600, "failure_ttl": WEEK_S}, tracked=True),
    # takedowns
    "send_notice": Job("default", "workers.takedown.notify.send_notice", tracked=True),
    "contacts": Job("default", "workers.takedown.contacts.refresh_job", tracked=True),
    "recheck": Job("default", "workers.takedown.recheck.recheck", tracked=True),
    "reupload": Job("default", "workers.takedown.recheck.watch", tracked=True),
    "deadline": Job("default", "workers.takedown.recheck.recheck", tracked=True),     # one-off, just after a deadline
    # recurring
    "purge_sessions": Job("default", "workers.system.housekeeping.purge_sessions", every_s=3600),
    "notice_sweep": Job("default", "workers.takedown.notify.sweep", every_s=120),
    "predict_all": Job("default", "workers.takedown.predict.update_all", every_s=86400),
    "patrol_fill": Job("default", "workers.capture.patrol.fill_job", every_s=60),
    "retention": Job("default", "workers.cases.retention.run", every_s=86400),
    "match_refresh": Job("match", "workers.matching.matcher.refresh_job", every_s=30),
    "match_retrain": Job("match", "workers.matching.matcher.retrain_job", every_s=86400),
}


def rq_form(name: str, *args) -> tuple[str, tuple]:
    """How RQ holds job `name` with these arguments: (function name, arguments). A tracked job
    travels as its name and its row's id through workers.system.deliver.run."""
    job = JOBS[name]
    return ("workers.system.deliver.run", (name, *args)) if job.tracked else (job.target, args)


def enqueue(settings, name: str, *args, conn=None, **options) -> bool:
    """Put job `name` on its queue; False (logged, never raised) when Redis cannot be reached,
    so the caller's database row waits for the sweep instead."""
    import redis

    from workers.system.queue import queue, redis_url
    job = JOBS[name]
    if job.tracked:
        return _enqueue_tracked(settings, name, args, conn, options)
    try:
        conn = conn or redis.Redis.from_url(redis_url(settings), socket_connect_timeout=1, socket_timeout=5)
        queue(settings, job.queue, conn).enqueue(job.target, *args, **{**job.options, **options})
        return True
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("queue not reachable for %s (%s): the work waits in the database", name, type(exc).__name__)
        return False


def _enqueue_tracked(settings, name: str, args: tuple, conn, options: dict) -> bool:
    """The row first (committed), then its wake-up; the row remembers the RQ options for re-wakes."""
    import redis

    from store.db import session_scope
    from workers.system import runs
    from workers.system.queue import redis_url
    options = {k: v for k, v in options.items() if k != "job_id"}    # wake-ups get ids of their own
    with session_scope(settings.database_url) as s:
        row = runs.request(s, name, str(args[0]), options=options)
        s.flush()
        run_id, state = row.id, row.state
    if state != "queued":
        return True                 # running now: its holder does the work
    try:
        conn = conn or redis.Redis.from_url(redis_url(settings), socket_connect_timeout=1, socket_timeout=5)
        with session_scope(settings.database_url) as s:
            from store.models import JobRun
            row = s.get(JobRun, run_id)
            row.wake_id = runs.wake(settings, row, conn)
        return True
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("queue not reachable for %s (%s): the work waits in the database", name, type(exc).__name__)
        return False
