"""Engine and sessions for SQLite (default) and PostgreSQL; migrations through Alembic.

Connections never cross a fork: RQ's Worker forks a work horse per job, and a child that
reused its parent's pooled connection would share one server session with its siblings
(on PostgreSQL, psycopg's prepared statements then collide: "_pg3_0 already exists").
Each child drops the inherited pool without closing the parent's sockets and opens its own.
"""
import os
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
_engines: dict = {}


def engine_for(url: str):
    if url not in _engines:
        kwargs = {"future": True, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        eng = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(eng, "connect")
            def _sqlite_pragmas(conn, _record):
                cur = conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA secure_delete=ON")   # withdrawn data is overwritten, not just unlinked
                cur.close()
        _engines[url] = eng
    return _engines[url]


def _forget_pools_in_child() -> None:
    # close=False: the parent still owns those sockets; the child only stops using them.
    for eng in _engines.values():
        eng.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools_in_child)


def sessionmaker_for(url: str):
    return sessionmaker(bind=engine_for(url), expire_on_commit=False, future=True)


@contextmanager
def session_scope(url: str):
    session = sessionmaker_for(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Create or upgrade the schema to the newest migration (kesu init runs this)."""
    from alembic import command
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "heads")
