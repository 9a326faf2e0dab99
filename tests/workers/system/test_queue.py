"""Schedules in the database become jobs on real Redis, run by a real `kesu worker`."""
from datetime import timedelta

from conftest import TEST_PASSPHRASE, kesu_cli
from rq import Queue
from sqlalchemy import func, select

from store.models import Schedule, StaffSession, utcnow
from workers.system import schedule


def test_due_schedule_runs_once_through_a_worker(instance, redis_url):
    instance.settings.redis_url = redis_url
    now = utcnow()
    with instance.session() as s:
        s.add(StaffSession(id="a" * 64, created_at=now - timedelta(days=2), last_seen_at=now - timedelta(days=2)))
        s.add(StaffSession(id="b" * 64, created_at=now, last_seen_at=now))
    schedule.ensure_recurring(instance)
    schedule.ensure_recurring(instance)                         # idempotent
    with instance.session() as s:
        assert s.execute(select(func.count()).select_from(Schedule)).scalar() == len(schedule.RECURRING)
        s.execute(select(Schedule).where(Schedule.kind == "purge_sessions")).scalar_one().due_at = now - timedelta(seconds=1)

    assert schedule.run_due(instance) == 1
    assert schedule.run_due(instance) == 0                      # not due again until its interval passed
    from workers.system.queue import connection
    q = Queue("default", connection=connection(instance.settings))
    assert len(q) == 1
    assert q.jobs[0].args == ("",)                               # job arguments carry no data

    env = {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
           "KESU_REDIS_URL": redis_url, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}
    ran = kesu_cli("worker", "--queues", "default", "--burst", env=env)
    assert ran.returncode == 0, ran.stderr
    with instance.session() as s:
        assert [r.id for r in s.execute(select(StaffSession)).scalars()] == ["b" * 64]
        row = s.execute(select(Schedule).where(Schedule.kind == "purge_sessions")).scalar_one()
        assert row.due_at > utcnow() + timedelta(minutes=50)


def test_worker_refuses_a_wrong_passphrase(instance, redis_url):
    env = {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
           "KESU_REDIS_URL": redis_url, "KESU_KEY_PASSPHRASE": "wrong"}
    ran = kesu_cli("worker", "--burst", env=env)
    assert ran.returncode != 0 and "wrong key passphrase" in ran.stderr
