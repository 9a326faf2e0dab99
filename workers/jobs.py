"""Every job kesu runs, named once: its queue, the function RQ calls, and its defaults.

Jobs are enqueued by name through `enqueue` (the queue, the scheduler, the apps and the tests
use this one table). Targets are dotted strings, so the intake can hand work on without
importing the code that runs it. Arguments are internal ids, never signals (DESIGN.md §3).
A job's work is a database row first: when Redis cannot be reached `enqueue` says so and the
row waits in the database for the next sweep.
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


JOBS: dict[str, Job] = {
    # the victim's case
    "take_in": Job("default", "workers.cases.takein.take_in", options={"result_ttl": 0, "failure_ttl": WEEK_S}),
    "case_added": Job("match", "workers.matching.matcher.case_added", options={"result_ttl": 0, "failure_ttl": WEEK_S}),
    "case_withdrawn": Job("match", "workers.matching.matcher.case_withdrawn",
                          options={"result_ttl": 0, "failure_ttl": WEEK_S}),
    # capture
    "crawl": Job("crawl", "workers.capture.crawl.run_job", options={"result_ttl": 3600, "failure_ttl": WEEK_S}),
    "patrol": Job("crawl", "workers.capture.patrol.run_job", options={"result_ttl": 3600, "failure_ttl": WEEK_S}),
    # takedowns
    "send_notice": Job("default", "workers.takedown.notify.send_notice"),
    "contacts": Job("default", "workers.takedown.contacts.refresh_job"),
    "recheck": Job("default", "workers.takedown.recheck.recheck"),
    "reupload": Job("default", "workers.takedown.recheck.watch"),
    # recurring
    "purge_sessions": Job("default", "workers.system.housekeeping.purge_sessions", every_s=3600),
    "notice_sweep": Job("default", "workers.takedown.notify.sweep", every_s=120),
    "predict_all": Job("default", "workers.takedown.predict.update_all", every_s=86400),
    "patrol_fill": Job("default", "workers.capture.patrol.fill_job", every_s=60),
    "retention": Job("default", "workers.cases.retention.run", every_s=86400),
    "match_refresh": Job("match", "workers.matching.matcher.refresh_job", every_s=30),
    "match_retrain": Job("match", "workers.matching.matcher.retrain_job", every_s=86400),
}


def enqueue(settings, name: str, *args, conn=None, **options) -> bool:
    """Put job `name` on its queue; False (logged, never raised) when Redis cannot be reached,
    so the caller's database row waits for the sweep instead."""
    import redis

    from workers.system.queue import queue, redis_url
    job = JOBS[name]
    try:
        conn = conn or redis.Redis.from_url(redis_url(settings), socket_connect_timeout=1, socket_timeout=5)
        queue(settings, job.queue, conn).enqueue(job.target, *args, **{**job.options, **options})
        return True
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("queue not reachable for %s (%s): the work waits in the database", name, type(exc).__name__)
        return False
