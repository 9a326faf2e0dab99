"""The data layer on SQLite and PostgreSQL: schema, audit chain, staff accounts."""
import time

import pyotp
import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DatabaseError

from backoffice import accounts
from crypto import CryptoError
from store import audit, db
from store.models import AuditEntry, Case, Signal, Staff


def test_schema_is_migrated_and_init_is_idempotent(instance):
    tables = set(inspect(db.engine_for(instance.settings.database_url)).get_table_names())
    assert {"cases", "signals", "staff", "audit_log", "captures", "media", "matches", "takedowns",
            "notices", "schedules", "domains", "reviews", "submissions", "staff_sessions"} <= tables
    key_id = instance.active_key().key_id
    assert instance.init("test key passphrase") == key_id
    from crypto.keys import WrongPassphrase
    with pytest.raises(WrongPassphrase):
        instance.init("not the passphrase")


def test_audit_log_is_append_only_and_chained(instance):
    with instance.session() as s:
        for i in range(5):
            audit.record(s, "staff:1", "case.view", f"case:{i}")
    with instance.session() as s:
        assert audit.verify(s) is None
        assert [e.prev_hash for e in s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()][0] == audit.GENESIS
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError):
            with instance.session() as s:
                s.execute(text(statement))
    with instance.session() as s:
        assert s.execute(select(AuditEntry)).scalars().all()[-1].actor == "staff:1"


def test_audit_chain_holds_with_writers_at_the_same_time(instance):
    # The intake, the back office and the workers write entries at once: the chain stays one.
    from concurrent.futures import ThreadPoolExecutor

    def write(i):
        with instance.session() as s:
            s.execute(select(AuditEntry.id).limit(1)).all()      # a read first, as real handlers do
            audit.record(s, f"worker:{i % 4}", "case.view", f"case:{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(64)))
    with instance.session() as s:
        assert s.execute(select(func.count()).select_from(AuditEntry)).scalar() == 64
        assert audit.verify(s) is None


def test_audit_chain_detects_a_changed_entry(instance):
    with instance.session() as s:
        for i in range(3):
            audit.record(s, "staff:1", "export", f"case:{i}")
    with instance.session() as s:
        entries = s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
        s.expunge_all()
    # Recompute the chain over a copy with one field changed, as verify() does.
    entries[1].target = "case:99"
    prev = audit.GENESIS
    broken = None
    for e in entries:
        if e.hash != audit._digest(prev, e.at, e.actor, e.action, e.target, e.detail):
            broken = e.id
            break
        prev = e.hash
    assert broken == entries[1].id


def test_signals_are_stored_as_ciphertext_only(instance):
    from crypto import envelope
    key = envelope.new_key()
    with instance.session() as s:
        case = Case(number_hash="ab" * 32, passphrase_hash="x")
        s.add(case)
        s.flush()
        s.add(Signal(case_id=case.id, item="p1", type="pdq",
                     ciphertext=envelope.encrypt(key, b'{"hash":"f0f0"}', aad=f"case:{case.id}".encode())))
    with instance.session() as s:
        row = s.execute(select(Signal)).scalar_one()
        assert b"f0f0" not in row.ciphertext


def totp_now(secret, offset=0):
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(int(time.time() // 30) + offset)


def test_staff_login_with_totp_rejects_replay_and_slows_guessing(instance):
    secret = accounts.add(instance, "Staff@Example.org", "a long enough password", "staff")
    with pytest.raises(ValueError):
        accounts.add(instance, "staff@example.org", "a long enough password", "staff")
    with pytest.raises(ValueError):
        accounts.add(instance, "other@example.org", "short", "staff")
    with instance.session() as s:
        row = s.execute(select(Staff)).scalar_one()
        assert secret.encode() not in row.totp_secret and "a long enough" not in row.password_hash
    code = totp_now(secret)
    staff = accounts.authenticate(instance, "staff@example.org", "a long enough password", code)
    assert staff.role == "staff"
    with pytest.raises(accounts.LoginRefused):       # the same code twice: replay
        accounts.authenticate(instance, "staff@example.org", "a long enough password", code)
    with pytest.raises(accounts.LoginRefused):       # right code, wrong password
        accounts.authenticate(instance, "staff@example.org", "wrong password!!", totp_now(secret, 1))
    with pytest.raises(accounts.LoginRefused):       # unknown account: same answer
        accounts.authenticate(instance, "nobody@example.org", "a long enough password", code)
    for _ in range(5):
        with pytest.raises(accounts.LoginRefused):
            accounts.authenticate(instance, "staff@example.org", "wrong password!!", "000000")
    # No lock on the account row (the login view slows guessing: tests/backoffice/test_backoffice_access.py).
    assert accounts.authenticate(instance, "staff@example.org", "a long enough password",
                                 totp_now(secret, 1)).role == "staff"
    with instance.session() as s:
        actions = [e.action for e in s.execute(select(AuditEntry)).scalars()]
        assert actions.count("login") == 2 and actions.count("login.failed") >= 3
        assert audit.verify(s) is None


def test_totp_secret_cannot_be_moved_to_another_account(instance):
    accounts.add(instance, "a@example.org", "a long enough password", "staff")
    accounts.add(instance, "b@example.org", "a long enough password", "staff")
    with instance.session() as s:
        a, b = s.execute(select(Staff).order_by(Staff.id)).scalars().all()
        b.totp_secret = a.totp_secret
    with pytest.raises(CryptoError):
        accounts.authenticate(instance, "b@example.org", "a long enough password", "123456")
