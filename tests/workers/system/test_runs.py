"""The database as the queue's source of truth (workers.system.runs) on real Redis and RQ workers,
SQLite and PostgreSQL: two deliveries run once, a lost wake-up or a Redis flush loses nothing, a
killed worker's run is taken up again, a run that keeps failing stops and shows its real error."""
import threading
from datetime import timedelta

import pytest
from conftest import make_instance
from rq import SimpleWorker
from sqlalchemy import func, select, update

from store.models import Case, JobRun, Submission, utcnow
from workers import jobs
from workers.system import context, health, runs
from workers.system.queue import connection, queue


@pytest.fixture
def live(tmp_path, database_url, redis_url):
    inst = make_instance(tmp_path / "instance", database_url, redis_url=redis_url, job_lease_seconds=3,
                         job_max_attempts=2, job_retry_seconds=0)
    context.set_instance(inst)
    yield inst
    context.set_instance(None)


def _submission(inst) -> int:
    """A pending submission whose sealed bytes are garbage: take-in fails on it every time."""
    with inst.session() as s:
        case = Case(number_hash="c" * 64, passphrase_hash="x", category="adult_ncii")
        s.add(case)
        s.flush()
        sub = Submission(case_id=case.id, key_id=inst.public_key()[0], sealed=b"not a sealed box")
        s.add(sub)
        s.flush()
        return sub.id


def _run(inst, name, ref):
    with inst.session() as s:
        return s.execute(select(JobRun).where(JobRun.name == name, JobRun.ref == str(ref))).scalars().one()


def _work(inst):
    SimpleWorker(["default", "crawl", "match"], connection=connection(inst.settings)).work(burst=True)


def test_two_deliveries_run_once(live):
    calls = []
    assert runs.run_claimed(live, "contacts", "7", lambda: calls.append(1) or "ran") == "ran"
    assert runs.run_claimed(live, "contacts", "7", lambda: calls.append(2) or "ran") == {"skipped": True}
    assert calls == [1] and _run(live, "contacts", 7).state == "done"

    # two deliveries at the same moment: the compare-and-set lets exactly one through
    with live.session() as s:
        runs.request(s, "contacts", "7")            # a new request re-arms a finished run
    started, release, ran = threading.Event(), threading.Event(), []

    def slow():
        started.set()
        release.wait(10)
        ran.append("first")
    t = threading.Thread(target=lambda: runs.run_claimed(live, "contacts", "7", slow))
    t.start()
    assert started.wait(10)
    assert runs.run_claimed(live, "contacts", "7", lambda: ran.append("second")) == {"skipped": True}
    release.set()
    t.join(10)
    assert ran == ["first"] and _run(live, "contacts", 7).attempts == 1


def test_a_flushed_redis_loses_nothing_and_a_failing_job_stops_with_its_real_error(live):
    assert jobs.enqueue(live.settings, "contacts", "404")       # the row first, then the wake-up
    conn = connection(live.settings)
    conn.flushdb()                                               # Redis restarted without persistence
    assert queue(live.settings, "default", conn).count == 0
    assert runs.sweep(live)["woken"] == 1                        # the row is still due: woken again
    assert runs.sweep(live)["woken"] == 0                        # its wake-up is alive: not twice
    _work(live)                                                  # domain 404 does not exist: it fails
    row = _run(live, "contacts", 404)
    assert row.state == "queued" and row.attempts == 1 and row.error    # failed once, retried later
    assert "Background on this error" not in row.error
    runs.sweep(live)
    _work(live)
    row = _run(live, "contacts", 404)
    assert row.state == "failed" and row.attempts == 2                   # bounded: no third attempt
    runs.sweep(live)
    assert queue(live.settings, "default", conn).count == 0
    status = health.collect(live)
    assert status["runs"]["failed"][0]["error"] == row.error
    assert any("gave up after every attempt" in p for p in status["problems"])
    assert f"GAVE UP contacts 404 after 2 attempt(s): {row.error}" in health.render_text(status)
    from conftest import staff_client
    page = staff_client(live, role="admin").get("/admin/health?lang=ja").get_data(True)
    assert 'data-code="runs_failed"' in page and "すべての再試行のあとで止まりました" in page
    assert f'data-run="{row.id}"' in page and row.error.split(":")[0] in page       # its real error, on the page
    admin = staff_client(live, role="admin", address="admin2@example.org")
    from conftest import csrf
    token = csrf(admin, "/admin/health")
    r = admin.post("/admin/runs/retry", data={"csrf_token": token, "job_id": str(row.id)})
    assert r.status_code == 302                                  # an admin's retry starts again
    again = _run(live, "contacts", 404)
    assert again.state == "queued" and again.attempts == 0


def test_describe_error_gives_the_driver_message(live):
    from sqlalchemy import text
    with pytest.raises(Exception) as caught:
        with live.session() as s:
            s.execute(text("SELECT * FROM no_such_table"))
    said = runs.describe_error(caught.value)
    assert "no_such_table" in said and "sqlalche.me" not in said and "[SQL:" not in said


def test_an_abandoned_run_is_taken_up_after_its_lease(live):
    # a worker claimed it and died: no renewals, the lease runs out
    assert runs.claim(live, "contacts", "9") is not None
    assert runs.claim(live, "contacts", "9") is None                     # held by a live lease
    with live.session() as s:
        s.execute(update(JobRun).where(JobRun.name == "contacts")
                  .values(lease_until=utcnow() - timedelta(seconds=1)))
    assert runs.sweep(live) == {"requested": 0, "abandoned": 1, "woken": 1}
    row = _run(live, "contacts", 9)
    assert row.state == "queued" and "abandoned" in row.error


def test_the_sweep_asks_for_submissions_no_run_stands_for(live):
    sid = _submission(live)                                      # arrived while nothing wrote its run
    assert any("submission(s) waiting" in p for p in health.collect(live)["problems"])
    assert runs.sweep(live)["requested"] == 1
    assert not any("submission(s) waiting" in p for p in health.collect(live)["problems"])
    with live.session() as s:
        assert s.execute(select(func.count()).select_from(JobRun).where(JobRun.ref == str(sid))).scalar() == 1
