"""Redis connection and queues. Redis holds only queues; the database is the truth."""
import logging
import time

import redis
import rq
from rq import Queue, Worker

from store.config import Settings

log = logging.getLogger("kesu.worker")

QUEUES = ("default", "crawl", "match")


def redis_url(settings: Settings) -> str:
    return settings.redis_url or f"unix://{settings.redis_socket}"


def connection(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(redis_url(settings))


def queue(settings: Settings, name: str = "default", conn=None) -> Queue:
    return Queue(name, connection=conn or connection(settings))


def workers_listening(settings: Settings, name: str) -> int:
    """How many live workers serve queue `name` (0 when Redis is not reachable)."""
    try:
        conn = connection(settings)
        conn.ping()
        return sum(1 for w in Worker.all(connection=conn) if name in w.queue_names())
    except (redis.exceptions.ConnectionError, OSError):
        return 0


class _Reregistering:
    """A worker that registers again when Redis lost its registration (a restart without
    persistence), so status pages and `kesu crawl` still see it."""

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is None and not self.connection.exists(self.key):
            log.warning("Redis forgot worker %s (restarted?): registering again", self.name)
            self.register_birth()
        return super().heartbeat(timeout, pipeline)


class KesuWorker(_Reregistering, rq.Worker):
    """Forks a work horse per job (store.db drops the inherited connection pool in each)."""


class KesuSimpleWorker(_Reregistering, rq.SimpleWorker):
    """No fork: the `match` queue's index stays in this process's memory."""


def work_until_stopped(settings, names: list[str], burst: bool = False, max_wait: float = 30.0) -> None:
    """Run a worker; when it quits because Redis went away (not on request), wait for Redis and
    start a fresh one, with a growing pause, instead of leaving the machine without a worker."""
    cls = KesuSimpleWorker if "match" in names else KesuWorker
    pause = 1.0
    while True:
        conn = connection(settings)
        worker = cls(names, connection=conn)
        started = time.monotonic()
        try:
            worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
        except (redis.exceptions.RedisError, OSError) as exc:     # e.g. its goodbye to a Redis that is gone
            log.warning("worker lost Redis (%s)", type(exc).__name__)
        # RQ notes the time of a requested stop (SIGTERM, Ctrl-C) whether it was busy or idle.
        if burst or worker._stop_requested or worker._shutdown_requested_date is not None:  # noqa: SLF001
            return
        pause = 1.0 if time.monotonic() - started > 60 else min(max_wait, pause * 2)
        log.warning("worker quit without being asked to (Redis lost?): starting again in %.0f s", pause)
        time.sleep(pause)
        while True:
            try:
                connection(settings).ping()
                break
            except (redis.exceptions.RedisError, OSError):
                time.sleep(pause)
                pause = min(max_wait, pause * 2)
