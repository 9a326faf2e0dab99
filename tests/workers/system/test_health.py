"""`kesu status` and the admin health page on real Redis with real RQ workers and failed jobs."""
import json
import re
from datetime import timedelta

import pyotp
import pytest
from click.testing import CliRunner
from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from backoffice import accounts
from store.models import AuditEntry, Schedule, utcnow
from workers.system import health
from workers.system.queue import connection

PASSWORD = "a long enough password"


def kesu(*args, env):
    from cli import cli
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def instance(tmp_path):
    """SQLite only here: the queue side does not depend on the database engine."""
    from conftest import make_instance
    return make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}")


@pytest.fixture
def live(instance, redis_url):
    instance.settings.redis_url = redis_url
    return instance


def env_for(instance):
    return {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
            "KESU_REDIS_URL": instance.settings.redis_url}


def fail_a_job(instance) -> str:
    """A real job that fails in a real (non-forking) RQ worker: math.sqrt(-1)."""
    conn = connection(instance.settings)
    job = Queue("default", connection=conn).enqueue("math.sqrt", -1, failure_ttl=600)
    SimpleWorker(["default"], connection=conn).work(burst=True)
    assert job.id in FailedJobRegistry("default", connection=conn).get_job_ids()
    return job.id


def actions(instance):
    with instance.session() as s:
        return [(e.action, e.target) for e in s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()]


def test_status_reports_workers_queues_failed_jobs_and_disk(live):
    conn = connection(live.settings)
    job_id = fail_a_job(live)
    Queue("crawl", connection=conn).enqueue("math.sqrt", 4)          # waiting, and nobody serves crawl
    worker = Worker(["default", "match"], connection=conn, name="w-health-test")
    worker.register_birth()
    try:
        status = health.collect(live)
    finally:
        worker.register_death()
    q = status["queue"]
    assert q["reachable"]
    assert [w["name"] for w in q["workers"]] == ["w-health-test"]
    queues = {x["name"]: x for x in q["queues"]}
    assert queues["default"]["failed"] == 1 and queues["default"]["workers"] == 1
    assert queues["crawl"]["waiting"] == 1 and queues["crawl"]["workers"] == 0
    [failed] = q["failed"]
    assert failed["id"] == job_id and failed["function"] == "math.sqrt" and "ValueError" in failed["error"]
    # Listed once, it no longer expires (it was enqueued to be dropped after 10 minutes).
    assert conn.ttl(f"rq:job:{job_id}") == -1
    assert conn.zscore(FailedJobRegistry("default", connection=conn).key, job_id) == float("inf")
    assert "1 failed job(s)" in status["problems"]
    assert any("crawl" in p and "no worker" in p for p in status["problems"])
    assert status["keys"]["active"] == live.active_key().key_id
    parts = status["disk"]["parts"]
    assert parts["secrets"] > 0 and status["disk"]["bytes"] >= sum(parts.values())
    if status["database"] == "sqlite":
        assert (parts.get("kesu.db") or parts.get("database")) > 0
    assert status["disk"]["free"] > 0
    json.dumps(status)                                                 # machine-readable as is


def test_kesu_status_prints_text_and_json(live):
    job_id = fail_a_job(live)
    env = env_for(live)
    text = kesu("status", env=env)
    assert text.exit_code == 0, text.output
    assert f"FAILED  {job_id}" in text.output and "math.sqrt" in text.output
    as_json = kesu("status", "--json", env=env)
    assert json.loads(as_json.output)["queue"]["failed"][0]["id"] == job_id
    assert kesu("status", "--check", env=env).exit_code == 2


def test_status_survives_an_unreachable_queue_and_sees_a_stopped_scheduler(instance):
    instance.settings.redis_url = "redis://127.0.0.1:1/0"
    with instance.session() as s:
        s.add(Schedule(kind="purge_sessions", ref="", due_at=utcnow() - timedelta(hours=2), interval_s=3600))
    status = health.collect(instance)
    assert status["queue"]["reachable"] is False and status["queue"]["error"]
    assert "queue (Redis) unreachable" in status["problems"]
    assert any("scheduler" in p for p in status["problems"])
    assert "UNREACHABLE" in health.render_text(status)


def test_failed_jobs_are_retried_or_discarded_from_the_admin_page(live):
    from backoffice import create_app
    app = create_app(live)
    secret = accounts.add(live, "boss@example.org", PASSWORD, "admin")
    client = app.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login").get_data(True)).group(1)
    assert client.post("/login", data={"email": "boss@example.org", "password": PASSWORD, "csrf_token": token,
                                       "code": pyotp.TOTP(secret).now()}).status_code == 302
    conn = connection(live.settings)
    job_id = fail_a_job(live)

    page = client.get("/admin/health?lang=en").get_data(True)
    assert job_id in page and "math.sqrt" in page and "ValueError" in page
    assert f'<code id="intake-key">{live.active_key().key_id}</code>' in page
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    assert client.post("/admin/jobs/retry", data={"job_id": job_id}).status_code == 400   # CSRF
    r = client.post("/admin/jobs/retry", data={"job_id": job_id, "csrf_token": token})
    assert r.status_code == 302
    assert job_id not in FailedJobRegistry("default", connection=conn).get_job_ids()
    assert Queue("default", connection=conn).job_ids == [job_id]
    assert ("job.retry", f"job:{job_id}") in actions(live)

    SimpleWorker(["default"], connection=conn).work(burst=True)     # it fails again: still listed
    assert job_id in client.get("/admin/health").get_data(True)
    r = client.post("/admin/jobs/discard", data={"job_id": job_id, "csrf_token": token})
    assert r.status_code == 302
    assert FailedJobRegistry("default", connection=conn).count == 0 and not Job.exists(job_id, connection=conn)
    assert ("job.discard", f"job:{job_id}") in actions(live)
    r = client.post("/admin/jobs/discard?lang=en", data={"job_id": job_id, "csrf_token": token},
                    follow_redirects=True)
    assert "no longer among the failed jobs" in r.get_data(True)
    assert client.get("/admin/health.json").get_json()["queue"]["failed"] == []


def test_a_missing_organisation_contact_is_a_problem_until_set(instance):
    from workers.system import health
    settings = instance.settings
    settings.org_name, settings.org_phone, settings.org_email = "kesu", "", ""
    status = health.collect(instance)
    missing = [p for p in status["problem_codes"] if p["code"] == "contact_missing"]
    assert missing == [{"code": "contact_missing", "fields": "KESU_ORG_NAME, KESU_ORG_PHONE, KESU_ORG_EMAIL"}]
    assert any("no person to reach" in line for line in status["problems"])
    settings.org_name, settings.org_phone, settings.org_email = "Support Centre", "03-0000-0000", "help@example.org"
    assert not [p for p in health.collect(instance)["problem_codes"] if p["code"] == "contact_missing"]


def test_a_crawler_browser_without_its_sandbox_is_said_loudly(instance, monkeypatch, caplog):
    """Root without the unprivileged browser user (scripts/setup.sh makes it): no sandbox is
    possible, and the health page, `kesu status` and the crawler's log say so."""
    import os

    from conftest import staff_client

    from workers.capture import chromium
    if os.geteuid() != 0:
        pytest.skip("the no-user case exists only when kesu runs as root")
    monkeypatch.setenv("KESU_CHROMIUM_USER", "kesu-no-such-user")
    chromium.sandbox_plan.cache_clear()
    try:
        status = health.collect(instance)
        assert status["browser"]["sandbox"] is False and "kesu-no-such-user" in status["browser"]["why"]
        assert any(p.startswith("the crawler's Chromium runs without its sandbox") for p in status["problems"])
        assert "without its sandbox" in health.render_text(status)
        page = staff_client(instance, role="admin").get("/admin/health?lang=ja").get_data(True)
        assert 'data-code="browser_unsandboxed"' in page and "サンドボックスなしで動いています" in page
        driver = chromium.new_driver(sandbox=True)
        driver.quit()
        assert any("CHROMIUM RUNS WITHOUT ITS SANDBOX" in r.getMessage() for r in caplog.records)
    finally:
        chromium.sandbox_plan.cache_clear()


def test_a_lifted_address_guard_is_a_problem(instance):
    """crawl_allow_private (tests set it) must never pass unnoticed in production."""
    from conftest import staff_client
    assert instance.settings.crawl_allow_private
    assert {"code": "guard_lifted"} in health.collect(instance)["problem_codes"]
    page = staff_client(instance, role="admin").get("/admin/health?lang=ja").get_data(True)
    assert 'data-code="guard_lifted"' in page and "アドレスガードが解除されています" in page
    instance.settings.crawl_allow_private = False
    assert {"code": "guard_lifted"} not in health.collect(instance)["problem_codes"]
