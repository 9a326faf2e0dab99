"""Staff management from the command line and the admin pages, through real HTTP requests.

Logged-in clients hold real server-side sessions; TOTP codes are real (pyotp); CSRF is on.
"""
import json
import re
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from backoffice import accounts
from store.models import AuditEntry, Staff, StaffSession

PASSWORD = "a long enough password"


def kesu(*args, env):
    from cli import cli
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def env_for(instance):
    return {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url}


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


@pytest.fixture
def instance(tmp_path):
    """SQLite only here: sessions and roles behave the same on PostgreSQL (tests/store/test_store.py)."""
    from conftest import make_instance
    return make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}")


@pytest.fixture
def app(instance):
    from backoffice import create_app
    app = create_app(instance)
    return app


ROLES = {"boss@example.org": "admin", "worker@example.org": "staff", "counsel@example.org": "lawyer"}


@pytest.fixture
def people(instance):
    """TOTP secrets by e-mail; an account is made when a test first asks for it."""
    class People(dict):
        def __missing__(self, email):
            self[email] = accounts.add(instance, email, PASSWORD, ROLES[email])
            return self[email]
    return People()


def staff_id(instance, email):
    with instance.session() as s:
        return s.execute(select(Staff.id).where(Staff.email == email)).scalar_one()


def log_in(app, email, secret):
    client = app.test_client()
    token = csrf(client.get("/login?lang=en").get_data(True))
    r = client.post("/login", data={"email": email, "password": PASSWORD, "code": pyotp.TOTP(secret).now(),
                                    "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"].endswith("/"), r.get_data(True)[:300]
    assert client.get("/").status_code == 200
    return client


def last_audit(instance):
    with instance.session() as s:
        e = s.execute(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).scalar_one()
        return e.actor, e.action, e.target, e.detail


def test_admin_pages_are_for_admins_only(app, instance, people):
    anonymous = app.test_client()
    r = anonymous.get("/admin/staff")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    worker = log_in(app, "worker@example.org", people["worker@example.org"])
    assert worker.get("/admin/staff").status_code == 403
    assert worker.get("/admin/health").status_code == 403
    boss = log_in(app, "boss@example.org", people["boss@example.org"])
    page = boss.get("/admin/staff?lang=en").get_data(True)
    assert "worker@example.org" in page and "boss@example.org" in page
    # Forms are guarded by CSRF: a post without the token changes nothing.
    target = staff_id(instance, "worker@example.org")
    assert boss.post(f"/admin/staff/{target}/disable").status_code == 400
    with instance.session() as s:
        assert s.get(Staff, target).active


def test_disabling_ends_an_open_session_on_its_next_request(app, instance, people):
    boss = log_in(app, "boss@example.org", people["boss@example.org"])
    worker = log_in(app, "worker@example.org", people["worker@example.org"])
    target = staff_id(instance, "worker@example.org")
    token = csrf(boss.get("/admin/staff?lang=en").get_data(True))

    r = boss.post(f"/admin/staff/{target}/disable", data={"csrf_token": token})
    assert r.status_code == 302
    with instance.session() as s:
        assert not s.get(Staff, target).active
        assert s.execute(select(func.count()).select_from(StaffSession)
                         .where(StaffSession.staff_id == target)).scalar() == 0
    assert last_audit(instance)[:3] == (f"staff:{staff_id(instance, 'boss@example.org')}", "staff.disable",
                                        f"staff:{target}")
    r = worker.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    # ... and a disabled account cannot log in again.
    with pytest.raises(accounts.LoginRefused):
        accounts.authenticate(instance, "worker@example.org", PASSWORD,
                              pyotp.TOTP(people["worker@example.org"]).now())

    r = boss.post(f"/admin/staff/{target}/enable", data={"csrf_token": token})
    assert r.status_code == 302 and last_audit(instance)[1] == "staff.enable"
    with instance.session() as s:
        assert s.get(Staff, target).active


def test_role_change_and_totp_reset_on_the_admin_page(app, instance, people):
    boss = log_in(app, "boss@example.org", people["boss@example.org"])
    lawyer = log_in(app, "counsel@example.org", people["counsel@example.org"])
    target = staff_id(instance, "counsel@example.org")
    token = csrf(boss.get("/admin/staff").get_data(True))

    assert boss.post(f"/admin/staff/{target}/role", data={"csrf_token": token, "role": "root"}).status_code == 400
    r = boss.post(f"/admin/staff/{target}/role", data={"csrf_token": token, "role": "staff"})
    assert r.status_code == 302
    assert last_audit(instance)[1:] == ("staff.role", f"staff:{target}", {"old": "lawyer", "new": "staff"})
    with instance.session() as s:
        assert s.get(Staff, target).role == "staff"

    r = boss.post(f"/admin/staff/{target}/reset-totp?lang=en", data={"csrf_token": token})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    page = r.get_data(True)
    new_secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', page).group(1)
    assert new_secret != people["counsel@example.org"]
    assert 'src="data:image/svg+xml' in page
    assert last_audit(instance)[1] == "staff.reset_totp" and new_secret not in json.dumps(last_audit(instance))
    # The lawyer's open session ended; the old authenticator no longer works, the new one does.
    assert lawyer.get("/").status_code == 302
    with pytest.raises(accounts.LoginRefused):
        accounts.authenticate(instance, "counsel@example.org", PASSWORD,
                              pyotp.TOTP(people["counsel@example.org"]).now())
    assert accounts.authenticate(instance, "counsel@example.org", PASSWORD, pyotp.TOTP(new_secret).now())
    # The secret is shown once: the staff page never shows it.
    assert new_secret not in boss.get("/admin/staff").get_data(True)


def test_the_last_admin_stays(app, instance, people):
    boss = log_in(app, "boss@example.org", people["boss@example.org"])
    me = staff_id(instance, "boss@example.org")
    token = csrf(boss.get("/admin/staff").get_data(True))
    r = boss.post(f"/admin/staff/{me}/disable?lang=en", data={"csrf_token": token}, follow_redirects=True)
    assert "last active admin" in r.get_data(True)
    assert kesu("staff", "role", "boss@example.org", "staff", env=env_for(instance)).exit_code != 0
    with instance.session() as s:
        assert s.get(Staff, me).active and s.get(Staff, me).role == "admin"


def test_staff_commands(app, instance, people):
    env = env_for(instance)
    people["worker@example.org"]                                    # the account exists before the listing
    listed = kesu("staff", "list", "--json", env=env)
    assert listed.exit_code == 0, listed.output
    rows = {r["email"]: r for r in json.loads(listed.output)}
    assert rows["worker@example.org"]["role"] == "staff" and rows["worker@example.org"]["active"]
    assert "totp" not in listed.output.lower() and "hash" not in listed.output.lower()

    worker = log_in(app, "worker@example.org", people["worker@example.org"])
    assert kesu("staff", "disable", "worker@example.org", env=env).exit_code == 0
    assert worker.get("/").status_code == 302                        # its session is refused at once
    assert last_audit(instance)[:2] == ("cli", "staff.disable")
    assert "DISABLED" in kesu("staff", "list", env=env).output
    assert kesu("staff", "enable", "worker@example.org", env=env).exit_code == 0
    assert kesu("staff", "role", "worker@example.org", "lawyer", env=env).exit_code == 0
    assert last_audit(instance)[1:] == ("staff.role", f"staff:{staff_id(instance, 'worker@example.org')}",
                                        {"old": "staff", "new": "lawyer"})

    reset = kesu("staff", "reset-totp", "worker@example.org", env=env)
    assert reset.exit_code == 0
    uri = reset.output.strip().splitlines()[0]
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    assert secret != people["worker@example.org"]
    assert accounts.authenticate(instance, "worker@example.org", PASSWORD, pyotp.TOTP(secret).now()).role == "lawyer"
    assert kesu("staff", "disable", "nobody@example.org", env=env).exit_code != 0


def test_admin_pages_speak_japanese(app, instance, people):
    boss = log_in(app, "boss@example.org", people["boss@example.org"])
    page = boss.get("/admin/staff?lang=ja").get_data(True)
    assert '<html lang="ja">' in page and "スタッフアカウント" in page and "無効にする" in page
    health_page = boss.get("/admin/health?lang=ja").get_data(True)
    assert "システムの状態" in health_page
