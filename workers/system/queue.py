"""Redis connection and queues. Redis holds only queues; the database is the truth."""
import redis
from rq import Queue, Worker

from store.config import Settings

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
