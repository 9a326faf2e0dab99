"""Job runs: the database side of the queue (DESIGN §4: every unit of work is a row first).

`request` writes (or re-arms) the JobRun row of (job name, ref) before any wake-up goes to
Redis. A delivery runs the work only after `claim` has won the row with a compare-and-set
UPDATE (state queued, or running with an expired lease) that takes a lease and counts the
attempt, so a job delivered twice, or to two machines, runs once. While the work runs a
thread renews the lease; a killed work horse stops renewing, and the sweep takes the row up
again. A failure is written with its real error and retried with a growing delay, up to
`job_max_attempts`; then the row is `failed` and the health page shows it until an admin
retries it.

`sweep` (the scheduler runs it every few seconds) re-sends the wake-up of every row that is
due and has none waiting in Redis, so a Redis flush or restart loses nothing.
"""
from __future__ import annotations

import importlib
import logging
import threading
import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from store.models import CrawlJob, JobRun, Submission, utcnow

log = logging.getLogger("kesu.runs")

ERROR_CHARS = 2000
LIVE_WAKES = ("queued", "started", "deferred", "scheduled")
BACKFILL_AFTER = timedelta(seconds=60)      # a domain row with no run this long was never requested


def describe_error(exc: BaseException) -> str:
    """The error a person can act on: the driver's own message, without SQLAlchemy's
    "(Background on this error at: ...)" and SQL echo."""
    orig = getattr(exc, "orig", None)
    base = orig if isinstance(orig, BaseException) else exc
    lines = [line for line in str(base).splitlines()
             if line.strip() and "Background on this error" not in line and not line.startswith("[SQL:")]
    return f"{type(base).__name__}: {' '.join(lines)}"[:ERROR_CHARS]


def _settings_int(settings, name: str, default: int) -> int:
    value = getattr(settings, name, None)
    return default if value is None else int(value)


def lease_seconds(settings) -> int:
    return _settings_int(settings, "job_lease_seconds", 60)


def max_attempts(settings) -> int:
    return _settings_int(settings, "job_max_attempts", 5)


def retry_delay(settings, attempts: int) -> timedelta:
    base = _settings_int(settings, "job_retry_seconds", 30)
    return timedelta(seconds=min(3600, base * 2 ** max(0, attempts - 1)))


# --- requesting -----------------------------------------------------------------------------------

def request(session, name: str, ref: str, options: dict | None = None, now: datetime | None = None) -> JobRun:
    """The run of (name, ref), queued and due now. A finished run is re-armed (a new request); a
    running one is left to its holder; a failed one stays failed until an admin retries it."""
    now = now or utcnow()
    row = session.execute(select(JobRun).where(JobRun.name == name, JobRun.ref == ref)).scalars().first()
    if row is None:
        try:
            with session.begin_nested():
                row = JobRun(name=name, ref=ref, state="queued", attempts=0, due_at=now, options=options or {},
                             created_at=now, updated_at=now)
                session.add(row)
        except IntegrityError:       # another process asked for the same run at the same moment
            row = session.execute(select(JobRun).where(JobRun.name == name, JobRun.ref == ref)).scalars().one()
        return row
    if row.state == "done":
        row.state, row.attempts, row.error, row.wake_id = "queued", 0, None, None
        row.due_at, row.updated_at = now, now
    if options:
        row.options = options
    return row


def retry(instance, run_id: int) -> None:
    """An admin's retry of a failed run: attempts start again, due now."""
    now = utcnow()
    with instance.session() as s:
        s.execute(update(JobRun).where(JobRun.id == run_id)
                  .values(state="queued", attempts=0, due_at=now, wake_id=None, lease_until=None, updated_at=now))


# --- claiming and running -----------------------------------------------------------------------

def claim(instance, name: str, ref: str) -> tuple[int, int] | None:
    """Win the run of (name, ref) for this delivery: (run id, attempt), or None when it is done,
    failed, held by a live lease elsewhere, or out of attempts."""
    settings = instance.settings
    now = utcnow()
    with instance.session() as s:
        row = request(s, name, ref, now=now) if not _exists(s, name, ref) else \
            s.execute(select(JobRun).where(JobRun.name == name, JobRun.ref == ref)).scalars().one()
        run_id, attempts = row.id, row.attempts
    if attempts >= max_attempts(settings):
        with instance.session() as s:
            s.execute(update(JobRun).where(JobRun.id == run_id, JobRun.state.in_(("queued", "running")),
                                           or_(JobRun.lease_until.is_(None), JobRun.lease_until < now))
                      .values(state="failed", lease_until=None, updated_at=now))
        return None
    with instance.session() as s:
        won = s.execute(update(JobRun).where(
            JobRun.id == run_id, JobRun.attempts == attempts,
            or_(JobRun.state == "queued",
                and_(JobRun.state == "running", JobRun.lease_until < now)))
            .values(state="running", attempts=attempts + 1, updated_at=now,
                    lease_until=now + timedelta(seconds=lease_seconds(settings)))).rowcount
    return (run_id, attempts + 1) if won == 1 else None


def _exists(session, name, ref) -> bool:
    return session.execute(select(JobRun.id).where(JobRun.name == name, JobRun.ref == ref)).first() is not None


class _Lease(threading.Thread):
    """Renews the lease of a claimed run while its work goes on (stops with the process)."""

    def __init__(self, instance, run_id: int, attempt: int):
        super().__init__(daemon=True, name=f"lease-{run_id}")
        self.instance, self.run_id, self.attempt = instance, run_id, attempt
        self.seconds = lease_seconds(instance.settings)
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(max(1.0, self.seconds / 3)):
            try:
                now = utcnow()
                with self.instance.session() as s:
                    s.execute(update(JobRun).where(JobRun.id == self.run_id, JobRun.attempts == self.attempt,
                                                   JobRun.state == "running")
                              .values(lease_until=now + timedelta(seconds=self.seconds)))
            except Exception as exc:    # noqa: BLE001 - a database blip: the next beat tries again
                log.warning("lease of run %s not renewed: %s", self.run_id, type(exc).__name__)


def finish(instance, run_id: int, attempt: int, error: str | None = None) -> str:
    """Close an attempt: done, queued again after a delay, or failed for good. Returns the state."""
    settings = instance.settings
    now = utcnow()
    if error is None:
        state, values = "done", {"error": None}
    elif attempt >= max_attempts(settings):
        state, values = "failed", {"error": error}
    else:
        state, values = "queued", {"error": error, "due_at": now + retry_delay(settings, attempt), "wake_id": None}
    with instance.session() as s:
        s.execute(update(JobRun).where(JobRun.id == run_id, JobRun.attempts == attempt, JobRun.state == "running")
                  .values(state=state, lease_until=None, updated_at=now, **values))
    return state


def target(name: str):
    from workers.jobs import JOBS
    module, _, func = JOBS[name].target.rpartition(".")
    return getattr(importlib.import_module(module), func)


def run_claimed(instance, name: str, ref, call) -> dict:
    """Run `call()` as the run of (name, ref) when this delivery wins it."""
    won = claim(instance, name, str(ref))
    if won is None:
        log.info("%s %s: already done, running elsewhere, or out of attempts; skipped", name, ref)
        return {"skipped": True}
    run_id, attempt = won
    lease = _Lease(instance, run_id, attempt)
    lease.start()
    try:
        result = call()
    except Exception as exc:
        lease.done.set()
        state = finish(instance, run_id, attempt, describe_error(exc))
        log.warning("%s %s attempt %d failed (%s): %s", name, ref, attempt, state, describe_error(exc)[:300])
        if state == "failed":
            raise                       # the last attempt also lands in RQ's failed registry
        return {"error": describe_error(exc), "retry": True}
    lease.done.set()
    finish(instance, run_id, attempt)
    return result


# --- the sweep -----------------------------------------------------------------------------------------

def _backfill(session, now) -> int:
    """Domain rows waiting for work that no run stands for (made before runs existed, or whose
    request was lost between two commits): ask for them."""
    n = 0
    have = {(name, ref) for name, ref in session.execute(
        select(JobRun.name, JobRun.ref).where(JobRun.name.in_(("take_in", "crawl"))))}
    for sid in session.execute(select(Submission.id)).scalars():
        if ("take_in", str(sid)) not in have:
            request(session, "take_in", str(sid), now=now)
            n += 1
    for jid in session.execute(select(CrawlJob.id).where(CrawlJob.status == "queued", CrawlJob.requested_by != "patrol",
                                                         CrawlJob.created_at < now - BACKFILL_AFTER)).scalars():
        if ("crawl", str(jid)) not in have:
            request(session, "crawl", str(jid), now=now)
            n += 1
    return n


def _wake_alive(conn, wake_id: str | None) -> bool:
    from rq.job import Job, NoSuchJobError
    if not wake_id:
        return False
    try:
        return Job.fetch(wake_id, connection=conn).get_status(refresh=False) in LIVE_WAKES
    except NoSuchJobError:
        return False


def wake(settings, row: JobRun, conn) -> str:
    """Send one wake-up for a run; returns its RQ job id (raises when Redis is not reachable)."""
    from workers.jobs import JOBS
    from workers.system.queue import queue
    job = JOBS[row.name]
    wake_id = f"{row.name}-{row.ref}-{row.attempts}-{uuid.uuid4().hex[:8]}"[:100]
    options = {**job.options, **(row.options or {})}
    queue(settings, job.queue, conn).enqueue("workers.system.deliver.run", row.name, _arg(row.name, row.ref),
                                             job_id=wake_id, description=f"{row.name}({row.ref})", **options)
    return wake_id


def _arg(name: str, ref: str):
    # Ids travel as the job functions expect them (RQ keeps Python types): ints where they are ints.
    return int(ref) if ref.isdigit() and name in ("take_in", "crawl", "case_added") else ref


def sweep(instance, conn=None) -> dict:
    """Abandoned runs back to queued; every due run without a live wake-up woken. Idempotent."""
    from workers.system.queue import connection
    settings = instance.settings
    conn = conn or connection(settings)
    now = utcnow()
    with instance.session() as s:
        added = _backfill(s, now)
        abandoned = s.execute(update(JobRun).where(JobRun.state == "running", JobRun.lease_until < now)
                              .values(state="queued", wake_id=None, updated_at=now,
                                      error="abandoned: its worker stopped renewing the lease (killed or lost)")
                              ).rowcount
    woken = 0
    with instance.session() as s:
        rows = s.execute(select(JobRun).where(JobRun.state == "queued", JobRun.due_at <= now)
                         .order_by(JobRun.due_at, JobRun.id)).scalars().all()
        for row in rows:
            if _wake_alive(conn, row.wake_id):
                continue
            row.wake_id = wake(settings, row, conn)
            s.flush()
            woken += 1
    if added or abandoned or woken:
        log.info("sweep: %d requested, %d abandoned taken up, %d woken", added, abandoned, woken)
    return {"requested": added, "abandoned": abandoned, "woken": woken}


# --- what the health page shows ------------------------------------------------------------------------

STUCK_AFTER = timedelta(minutes=10)


def summary(instance) -> dict:
    """Runs by state; failed ones with their error; rows stuck (due long ago, or with a dead lease)."""
    from sqlalchemy import func
    now = utcnow()
    with instance.session() as s:
        counts = dict(s.execute(select(JobRun.state, func.count()).group_by(JobRun.state)).all())
        failed = s.execute(select(JobRun).where(JobRun.state == "failed").order_by(JobRun.updated_at.desc())
                           .limit(50)).scalars().all()
        stuck = s.execute(select(JobRun).where(or_(
            and_(JobRun.state == "queued", JobRun.due_at < now - STUCK_AFTER),
            and_(JobRun.state == "running", JobRun.lease_until < now - STUCK_AFTER)))
            .order_by(JobRun.due_at).limit(50)).scalars().all()

        moving = set(s.execute(select(JobRun.ref).where(JobRun.name == "take_in", JobRun.state.in_(("queued", "running")),
                                                        JobRun.id.not_in([r.id for r in stuck]))).scalars())
        waiting = sum(1 for sid in s.execute(select(Submission.id)).scalars() if str(sid) not in moving)

        def item(r):
            return {"id": r.id, "name": r.name, "ref": r.ref, "state": r.state, "attempts": r.attempts,
                    "due": r.due_at.isoformat(timespec="seconds") + "Z", "error": r.error}
        return {"counts": {k: int(v) for k, v in counts.items()},
                "failed": [item(r) for r in failed], "stuck": [item(r) for r in stuck],
                "submissions_waiting": waiting}
