"""How the system is doing, for `kesu status` and the admin page: one dict, no content.

Collects: the queue (Redis reachable, RQ workers and what they serve, queue lengths, jobs
running), failed jobs (RQ's FailedJobRegistry of every queue, with retry and discard here),
the scheduler (overdue schedules mean no scheduler runs), the matcher's index freshness when
`workers.matching.matcher` tells it, the last patrol, mail delivery failures, the org keys, pending
submissions, and disk use of the instance. A part that is missing or unreachable reports
itself as such instead of failing the whole status.

A failed job never disappears silently: once listed here (by `kesu status`, the admin page or
a monitoring run of `kesu status --check`), it is pinned in RQ's failed registry without expiry
until an admin retries or discards it, and both are written to the audit log.
"""
from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from store import audit
from store.models import OrgKey, Schedule, Submission, utcnow
from workers.system.queue import QUEUES, connection

log = logging.getLogger("kesu.health")

OVERDUE = timedelta(minutes=5)          # a schedule this late means no scheduler is running
HEARTBEAT_GRACE = timedelta(seconds=30)


def heartbeat_stale_after(worker) -> timedelta:
    """RQ's own rhythm: an idle worker beats once per dequeue timeout (worker_ttl - 15 s, 405 s by
    default), so a beat is late only past worker_ttl (plus a grace for a busy machine)."""
    from rq.defaults import DEFAULT_WORKER_TTL
    return timedelta(seconds=int(getattr(worker, "worker_ttl", None) or DEFAULT_WORKER_TTL)) + HEARTBEAT_GRACE
EXC_CHARS = 300


def _iso(when) -> str | None:
    if when is None:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.isoformat(timespec="seconds") + "Z"


def _safe_redis_url(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# --- the queue ---------------------------------------------------------------------------------

def _queue_names(conn) -> list[str]:
    from rq import Queue
    names = set(QUEUES)
    try:
        names |= {q.name for q in Queue.all(connection=conn)}
    except Exception:       # noqa: BLE001 - a status never fails on a listing
        pass
    return sorted(names)


def _exc_tail(job) -> str:
    text = ""
    try:
        result = job.latest_result()
        text = (result.exc_string if result is not None else "") or ""
    except Exception:       # noqa: BLE001
        text = ""
    text = text or (job.exc_info or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:EXC_CHARS]


def _keep(conn, registry, job) -> None:
    """Pin a failed job: no expiry of its entry or its data until an admin retries or discards it
    (RQ would drop it after the failure_ttl it was enqueued with, 7 days for take-in jobs)."""
    try:
        pipe = conn.pipeline()
        pipe.zadd(registry.key, {job.id: "+inf"})
        pipe.persist(job.key)
        pipe.execute()
    except Exception:       # noqa: BLE001 - listing still works; pinning is retried next time
        log.warning("could not pin failed job %s", job.id)


def failed_jobs(conn, names=None) -> list[dict]:
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry
    out = []
    for name in names or _queue_names(conn):
        registry = FailedJobRegistry(queue=Queue(name, connection=conn))
        for job_id in registry.get_job_ids():
            job = Job.fetch(job_id, connection=conn) if Job.exists(job_id, connection=conn) else None
            if job is None:
                out.append({"id": job_id, "queue": name, "function": None, "enqueued": None,
                            "ended": None, "error": "job data expired"})
                continue
            _keep(conn, registry, job)
            out.append({"id": job.id, "queue": name, "function": job.func_name,
                        "enqueued": _iso(job.enqueued_at), "ended": _iso(job.ended_at),
                        "error": _exc_tail(job)})
    return out


def queue_status(settings) -> dict:
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    from workers.system.queue import redis_url
    status = {"url": _safe_redis_url(redis_url(settings)), "reachable": False, "error": None,
              "workers": [], "queues": [], "failed": []}
    try:
        conn = connection(settings)
        conn.ping()
    except Exception as exc:    # noqa: BLE001
        status["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return status
    status["reachable"] = True
    now = datetime.now(timezone.utc)
    for w in Worker.all(connection=conn):
        beat = w.last_heartbeat
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
        status["workers"].append({
            "name": w.name, "hostname": w.hostname, "pid": w.pid, "state": w.get_state(),
            "queues": w.queue_names(), "current_job": w.get_current_job_id(),
            "last_heartbeat": _iso(beat), "stale": bool(beat and now - beat > heartbeat_stale_after(w)),
            "successful": w.successful_job_count, "failed": w.failed_job_count})
    for name in _queue_names(conn):
        q = Queue(name, connection=conn)
        status["queues"].append({
            "name": name, "waiting": q.count,
            "running": StartedJobRegistry(queue=q).count,
            "scheduled": ScheduledJobRegistry(queue=q).count,
            "failed": FailedJobRegistry(queue=q).count,
            "workers": sum(1 for w in status["workers"] if name in w["queues"])})
    status["failed"] = failed_jobs(conn)
    return status


def _registry_for(conn, job_id: str):
    from rq import Queue
    from rq.registry import FailedJobRegistry
    for name in _queue_names(conn):
        registry = FailedJobRegistry(queue=Queue(name, connection=conn))
        if job_id in registry.get_job_ids():
            return registry
    raise KeyError(f"no failed job {job_id}")


def retry_failed(instance, actor: str, job_id: str) -> str:
    """Put a failed job back on its queue (audited). Returns the queue name."""
    conn = connection(instance.settings)
    registry = _registry_for(conn, job_id)
    registry.requeue(job_id)
    with instance.session() as s:
        audit.record(s, actor, "job.retry", f"job:{job_id}"[:100], queue=registry.name)
    return registry.name


def retry_run(instance, actor: str, run_id: str) -> str:
    """An admin's retry of a job run that gave up (or is stuck): attempts start again (audited)."""
    from store.models import JobRun
    from workers.system import runs
    with instance.session() as s:
        row = s.get(JobRun, int(run_id)) if str(run_id).isdigit() else None
        if row is None:
            raise KeyError(f"no job run {run_id}")
        name = row.name
    runs.retry(instance, int(run_id))
    with instance.session() as s:
        audit.record(s, actor, "job.retry", f"run:{run_id}"[:100], job=name)
    return name


def discard_failed(instance, actor: str, job_id: str) -> str:
    """Delete a failed job for good (audited, with its function name). Returns the queue name."""
    from rq.job import Job
    conn = connection(instance.settings)
    registry = _registry_for(conn, job_id)
    function = None
    if Job.exists(job_id, connection=conn):
        job = Job.fetch(job_id, connection=conn)
        function = job.func_name
        registry.remove(job, delete_job=True)
    else:
        registry.remove(job_id)
    with instance.session() as s:
        audit.record(s, actor, "job.discard", f"job:{job_id}"[:100], queue=registry.name, function=function)
    return registry.name


# --- the database side -------------------------------------------------------------------------

def _schedules(instance) -> dict:
    now = utcnow()
    with instance.session() as s:
        rows = s.execute(select(Schedule.kind, Schedule.due_at, Schedule.last_run_at)).all()
    overdue = [{"kind": k, "due": _iso(d)} for k, d, _ in rows if d < now - OVERDUE]
    patrol = [r for r in rows if r[0] in ("recheck", "reupload") or "patrol" in r[0]]
    last_patrol = max((r[2] for r in patrol if r[2]), default=None)
    try:            # re-checks of followed URLs stamp Takedown.checked_at
        from store.models import Takedown
        with instance.session() as s:
            checked = s.execute(select(func.max(Takedown.checked_at))).scalar()
        if checked and (last_patrol is None or checked > last_patrol):
            last_patrol = checked
    except Exception:   # noqa: BLE001 - an older schema without checked_at
        pass
    refresh = [r for r in rows if r[0] == "match_refresh"]
    return {"count": len(rows), "overdue": overdue, "last_patrol": _iso(last_patrol),
            "patrol_scheduled": sum(1 for _ in patrol),
            "match_refresh": {"last": _iso(refresh[0][2]), "next": _iso(refresh[0][1])} if refresh else None}


def _mail(instance) -> dict | None:
    try:
        from store.models import Notice
    except ImportError:
        return None
    if not hasattr(Notice, "state"):
        return None
    try:
        with instance.session() as s:
            counts = dict(s.execute(select(Notice.state, func.count()).group_by(Notice.state)).all())
            last_failed = s.execute(select(func.max(Notice.created_at)).where(Notice.state == "failed")).scalar()
    except Exception as exc:    # noqa: BLE001 - an older schema
        return {"error": f"{type(exc).__name__}"}
    return {"failed": int(counts.get("failed", 0)), "uncertain": int(counts.get("uncertain", 0)),
            "sent": int(counts.get("sent", 0)), "last_failed": _iso(last_failed)}


def _runs(instance) -> dict:
    """The database side of the queue: runs failed for good (with their real error) and stuck ones."""
    from workers.system import runs
    return runs.summary(instance)


def _keys(instance) -> dict:
    with instance.session() as s:
        keys = s.execute(select(OrgKey.key_id, OrgKey.active, OrgKey.created_at).order_by(OrgKey.created_at)).all()
        pending = dict(s.execute(select(Submission.key_id, func.count()).group_by(Submission.key_id)).all())
    return {"active": next((k for k, a, _ in keys if a), None),
            "keys": [{"key_id": k, "active": bool(a), "created": _iso(c), "pending_submissions": int(pending.get(k, 0))}
                     for k, a, c in keys],
            "pending_submissions": int(sum(pending.values()))}


def _size(path: Path) -> int:
    total = 0
    if path.is_file():
        return path.stat().st_size
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def disk(settings) -> dict:
    root = settings.instance
    parts = {}
    if root.exists():
        for entry in sorted(root.iterdir()):
            if entry.is_symlink() or entry.name.endswith(".sock"):
                continue
            parts[entry.name] = _size(entry)
    url = settings.database_url
    if url.startswith("sqlite:///"):
        db_file = Path(url[len("sqlite:///"):].split("?", 1)[0])
        if root not in db_file.parents:
            parts["database"] = sum(_size(Path(f"{db_file}{x}")) for x in ("", "-wal") if Path(f"{db_file}{x}").exists())
    usage = shutil.disk_usage(root if root.exists() else root.parent)
    return {"instance": str(root), "bytes": sum(parts.values()), "parts": parts,
            "free": usage.free, "total": usage.total, "free_ratio": round(usage.free / usage.total, 4) if usage.total else None}


def _last_backup(instance) -> str | None:
    from store.models import AuditEntry
    with instance.session() as s:
        return _iso(s.execute(select(func.max(AuditEntry.at)).where(AuditEntry.action == "backup.create")).scalar())


def browser_isolation() -> dict:
    """How the crawler's Chromium is isolated on this machine: {"sandbox", "user", "why"}."""
    from workers.capture.chromium import sandbox_plan
    return dict(sandbox_plan())


# --- everything --------------------------------------------------------------------------------

def collect(instance) -> dict:
    settings = instance.settings
    status = {"at": _iso(utcnow()), "instance": str(settings.instance),
              "database": settings.database_url.split(":", 1)[0].split("+", 1)[0]}
    try:
        status["keys"] = _keys(instance)
        status["schedules"] = _schedules(instance)
        status["runs"] = _runs(instance)
        status["last_backup"] = _last_backup(instance)
        status["database_ok"] = True
    except Exception as exc:    # noqa: BLE001
        status["database_ok"] = False
        status["database_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    status["queue"] = queue_status(settings)
    # The index lives in the matcher process: when the scheduler last asked it to refresh.
    status["matcher"] = (status.get("schedules") or {}).get("match_refresh")
    status["mail"] = _mail(instance)
    status["disk"] = disk(settings)
    status["contact_missing"] = settings.missing_contact()
    from workers.takedown.notify import missing_fields
    status["notice_settings_missing"] = missing_fields(settings, None, "*")
    from workers.takedown import regimes
    try:
        status["regimes"] = sorted(regimes.load_all())      # read again: a file edited since start shows here
    except regimes.RegimeError as exc:
        status["regimes"], status["regimes_error"] = [], str(exc)
    status["browser"] = browser_isolation()
    status["crawl_allow_private"] = bool(settings.crawl_allow_private)
    status["mail_in_clear"] = settings.smtp_security == "none"
    status["timestamps_unchecked"] = bool(settings.tsa_url and not settings.tsa_ca_file)
    status["problem_codes"] = problem_codes(status)
    status["problems"] = problems(status)
    return status


PROBLEMS = {
    "database_down": "database unreachable",
    "queue_down": "queue (Redis) unreachable",
    "no_workers": "no worker is running",
    "queue_unserved": "queue {name} has {n} waiting job(s) and no worker",
    "failed_jobs": "{n} failed job(s)",
    "runs_failed": "{n} job(s) gave up after every attempt",
    "runs_stuck": "{n} job(s) stuck (due long ago, or their worker is gone)",
    "submissions_waiting": "{n} submission(s) waiting with no take-in under way (failed, stuck or never asked for)",
    "stale_worker": "a worker stopped sending heartbeats",
    "schedules_overdue": "schedules are overdue: is the scheduler running?",
    "mail_failed": "{n} notice(s) failed to send",
    "disk_low": "less than 10% disk space free",
    "contact_missing": "the intake shows victims no person to reach: set {fields}",
    "no_backup": "no backup yet (kesu backup DIR)",
    "backup_old": "last backup is {days} days old",
    "notice_settings": "notices are refused until these settings are set: {names}",
    "regimes_bad": "a legal regime file is bad: {error}",
    "browser_unsandboxed": "the crawler's Chromium runs without its sandbox: {why}",
    "guard_lifted": "crawl_allow_private is on: the crawler and re-checks may reach private and loopback addresses",
    "mail_in_clear": "smtp_security is none: notice mail leaves without TLS",
    "timestamps_unchecked": "tsa_url is set without tsa_ca_file: timestamp tokens cannot be verified",
}
BACKUP_MAX_DAYS = 7


def problem_codes(status: dict) -> list[dict]:
    """What needs an admin's attention, as codes with parameters (the page translates them)."""
    out = []
    if not status.get("database_ok", True):
        out.append({"code": "database_down"})
    q = status["queue"]
    if not q["reachable"]:
        out.append({"code": "queue_down"})
    else:
        if not q["workers"]:
            out.append({"code": "no_workers"})
        for queue in q["queues"]:
            if queue["waiting"] and not queue["workers"]:
                out.append({"code": "queue_unserved", "name": queue["name"], "n": queue["waiting"]})
        if q["failed"]:
            out.append({"code": "failed_jobs", "n": len(q["failed"])})
        if any(w["stale"] for w in q["workers"]):
            out.append({"code": "stale_worker"})
    runs = status.get("runs") or {}
    if runs.get("failed"):
        out.append({"code": "runs_failed", "n": len(runs["failed"])})
    if runs.get("stuck"):
        out.append({"code": "runs_stuck", "n": len(runs["stuck"])})
    if runs.get("submissions_waiting"):
        out.append({"code": "submissions_waiting", "n": runs["submissions_waiting"]})
    if status.get("schedules", {}).get("overdue"):
        out.append({"code": "schedules_overdue"})
    mail = status.get("mail") or {}
    if mail.get("failed"):
        out.append({"code": "mail_failed", "n": mail["failed"]})
    d = status["disk"]
    if d.get("free_ratio") is not None and d["free_ratio"] < 0.1:
        out.append({"code": "disk_low"})
    if status.get("contact_missing"):
        fields = ", ".join(f"KESU_{name.upper()}" for name in status["contact_missing"])
        out.append({"code": "contact_missing", "fields": fields})
    if status.get("database_ok", True) and "last_backup" in status:
        # "Nothing needs attention" must never stand beside "Last backup: never"
        last = status["last_backup"]
        if not last:
            out.append({"code": "no_backup"})
        else:
            days = (utcnow() - datetime.fromisoformat(last.rstrip("Z")).replace(tzinfo=None)).days
            if days > BACKUP_MAX_DAYS:
                out.append({"code": "backup_old", "days": days})
    if status.get("notice_settings_missing"):
        out.append({"code": "notice_settings", "names": ", ".join(status["notice_settings_missing"])})
    if status.get("regimes_error"):
        out.append({"code": "regimes_bad", "error": status["regimes_error"]})
    browser = status.get("browser") or {}
    if browser and not browser.get("sandbox"):
        out.append({"code": "browser_unsandboxed", "why": browser.get("why", "")})
    if status.get("crawl_allow_private"):
        out.append({"code": "guard_lifted"})
    if status.get("mail_in_clear"):
        out.append({"code": "mail_in_clear"})
    if status.get("timestamps_unchecked"):
        out.append({"code": "timestamps_unchecked"})
    return out


def problems(status: dict) -> list[str]:
    """The same, as short English lines (for `kesu status` and monitoring)."""
    return [PROBLEMS[p["code"]].format(**p) for p in problem_codes(status)]


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render_text(status: dict) -> str:
    """The readable summary `kesu status` prints."""
    lines = [f"kesu status at {status['at']}", f"instance  {status['instance']} ({status['database']})"]
    keys = status.get("keys")
    if keys:
        older = len(keys["keys"]) - 1
        lines.append(f"org key   {keys['active']}" + (f" (+{older} older)" if older > 0 else "")
                     + f", {keys['pending_submissions']} submission(s) waiting to be taken in")
    q = status["queue"]
    if q["reachable"]:
        lines.append(f"queue     {q['url']}: {len(q['workers'])} worker(s)")
        for w in q["workers"]:
            lines.append(f"  worker  {w['name']} on {w['hostname']} [{w['state']}] queues {','.join(w['queues'])}"
                         + (" STALE" if w["stale"] else ""))
        for queue in q["queues"]:
            lines.append(f"  queue   {queue['name']:<10} waiting {queue['waiting']}, running {queue['running']}, "
                         f"failed {queue['failed']}, workers {queue['workers']}")
        for job in q["failed"]:
            lines.append(f"  FAILED  {job['id']} ({job['queue']}, {job['function']}, {job['ended']}): {job['error']}")
    else:
        lines.append(f"queue     {q['url']}: UNREACHABLE ({q['error']})")
    runs = status.get("runs")
    if runs:
        counts = runs.get("counts", {})
        lines.append("jobs      " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("queued", "running", "done", "failed")))
        for r in runs.get("failed", []):
            lines.append(f"  GAVE UP {r['name']} {r['ref']} after {r['attempts']} attempt(s): {r['error']}")
        for r in runs.get("stuck", []):
            lines.append(f"  STUCK   {r['name']} {r['ref']} ({r['state']}, due {r['due']}): {r['error'] or '-'}")
    sched = status.get("schedules")
    if sched:
        lines.append(f"schedules {sched['count']}, overdue {len(sched['overdue'])}, last patrol {sched['last_patrol'] or '-'}")
    matcher = status.get("matcher")
    if isinstance(matcher, dict) and "next" in matcher:
        lines.append(f"matcher   index refresh last asked for {matcher['last'] or 'never'}, next {matcher['next']}")
    else:
        lines.append(f"matcher   {matcher if matcher is not None else 'no index status reported'}")
    mail = status.get("mail")
    if mail is not None:
        lines.append(f"mail      failed {mail.get('failed', '-')}, uncertain {mail.get('uncertain', '-')}")
    d = status["disk"]
    lines.append(f"disk      instance {human_bytes(d['bytes'])}, free {human_bytes(d['free'])} of {human_bytes(d['total'])}")
    lines.append(f"backup    last {status.get('last_backup') or 'never (kesu backup DIR)'}")
    probs = status["problems"]
    lines.append("problems  " + ("none" if not probs else ""))
    lines.extend(f"  - {p}" for p in probs)
    return "\n".join(lines)
