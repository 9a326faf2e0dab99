"""`kesu key passphrase` and `kesu key rotate` on SQLite and PostgreSQL, with real Argon2id."""
import json

import pytest
from click.testing import CliRunner
from conftest import TEST_PASSPHRASE
from sqlalchemy import select

from crypto import CryptoError
from crypto.keys import WrongPassphrase
from crypto.sealing import b64, seal, unb64, unseal
from store import cases
from store.config import load
from store.instance import Instance
from store.models import AuditEntry, Capture, Media, Notice, OrgKey, Signal, Takedown
from workers.takedown.notify import archive, open_archive

NEW = "a brand new key passphrase"
PAYLOAD = {"version": 1, "category": "adult_ncii", "language": "en", "known_urls": [], "contact": None,
           "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-01-02"},
           "signals": [{"type": "md5", "hash": "0f" * 16, "item": "p1"}],
           "items": [{"item": "p1", "kind": "photo", "label": "photo 1"}]}


def kesu(*args, env):
    from cli import cli
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def env_for(instance, old=TEST_PASSPHRASE, new=NEW):
    env = {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
           "KESU_KEY_KDF": "interactive", "KESU_KEY_PASSPHRASE": old}
    if new is not None:
        env["KESU_NEW_KEY_PASSPHRASE"] = new
    return env


def fresh(instance) -> Instance:
    """Another process's view of the same instance (nothing shared in memory)."""
    return Instance(load(instance.settings.instance, database_url=instance.settings.database_url,
                         key_kdf="interactive"))


def submit(instance, payload=PAYLOAD):
    key_id, public = instance.public_key()
    _, _, case_id, sub_id = cases.create_case(instance, key_id, seal(unb64(public), json.dumps(payload).encode()))
    return case_id, sub_id


def actions(instance):
    with instance.session() as s:
        return [e.action for e in s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()]


def test_passphrase_change_rewraps_without_touching_data(instance):
    from workers.cases.decrypt import case_signals
    from workers.cases.takein import take_in_submission
    case_id, sub = submit(instance)
    take_in_submission(instance, sub)
    with instance.session() as s:
        ciphertexts = sorted(r.ciphertext for r in s.execute(select(Signal)).scalars())
    key_files = {p.name: p.read_bytes() for p in instance.settings.keystore_dir.glob("*.key")}
    key_id = instance.active_key().key_id

    assert kesu("key", "passphrase", env=env_for(instance, new="too short")).exit_code != 0
    wrong = kesu("key", "passphrase", env=env_for(instance, old="not the passphrase"))
    assert wrong.exit_code != 0 and "wrong key passphrase" in wrong.output
    fresh(instance).unlock(TEST_PASSPHRASE)                       # nothing changed by the refusals

    result = kesu("key", "passphrase", env=env_for(instance))
    assert result.exit_code == 0, result.output
    other = fresh(instance)
    with pytest.raises(WrongPassphrase):
        other.unlock(TEST_PASSPHRASE)
    other.unlock(NEW)
    assert other.active_key().key_id == key_id                    # the same key, wrapped anew
    assert case_signals(other, case_id)[0]["hash"] == "0f" * 16
    with instance.session() as s:                                  # no data was re-encrypted
        assert sorted(r.ciphertext for r in s.execute(select(Signal)).scalars()) == ciphertexts
    assert {p.name: p.read_bytes() for p in instance.settings.keystore_dir.glob("*.key")} == key_files
    assert actions(instance)[-1] == "key.passphrase"


def test_rotation_serves_the_new_key_and_old_keys_still_open(instance, monkeypatch):
    import store.instance
    from intake import create_app
    from workers.cases.decrypt import case_signals
    from workers.cases.takein import take_in_submission
    monkeypatch.setattr(store.instance, "RESEAL_BATCH", 1)        # re-seal row by row: batches are walked
    settings = instance.settings
    old_id, old_public = instance.public_key()
    taken, sub = submit(instance)
    take_in_submission(instance, sub)
    waiting, waiting_sub = submit(instance)                      # sealed to the old key, not yet taken in
    with instance.session() as s:      # what the crawler and notices seal to the org key
        capture = Capture(url="https://example.org/", status="ok", data_key=seal(unb64(old_public), b"k" * 32))
        s.add(capture)
        s.flush()
        s.add(Media(capture_id=capture.id, url="https://example.org/a.jpg", sha256_key="ab" * 32,
                    signals=seal(unb64(old_public), b'{"sha256": "x"}')))
        takedown = Takedown(case_id=taken, url="https://example.org/a.jpg")
        s.add(takedown)
        s.flush()
        notice = Notice(takedown_id=takedown.id, route="email")
        s.add(notice)
        s.flush()
        notice.archived = archive(unb64(old_public), notice.id, b"the notice as sent")

    result = kesu("key", "rotate", env=env_for(instance, new=None))
    assert result.exit_code == 0, result.output
    new_id = result.output.strip().splitlines()[0]
    assert new_id != old_id
    with instance.session() as s:
        rows = {r.key_id: r.active for r in s.execute(select(OrgKey)).scalars()}
    assert rows == {old_id: False, new_id: True}
    assert actions(instance)[-1] == "key.rotate"

    # Browsers now get the new key.
    served = create_app(Instance(settings)).test_client().get("/api/v1/key").get_json()
    assert served["key_id"] == new_id and served["public_key"] != old_public

    # A fresh process unlocks every key with the one passphrase.
    other = fresh(instance)
    active = other.unlock(TEST_PASSPHRASE)
    assert active.key_id == new_id
    old = other.private_keys(old_id)
    assert old.key_id == old_id and b64(old.public_key) == old_public

    # What was sealed to the old key was re-sealed to the new one.
    assert case_signals(other, taken)[0]["type"] == "md5"
    for path in settings.keystore_dir.glob("*.key"):
        unseal(active.private_key, path.read_bytes())
        with pytest.raises(CryptoError):
            unseal(old.private_key, path.read_bytes())
    with other.session() as s:
        assert unseal(active.private_key, s.execute(select(Capture)).scalar_one().data_key) == b"k" * 32
        assert unseal(active.private_key, s.execute(select(Media)).scalar_one().signals) == b'{"sha256": "x"}'
        assert open_archive(other, s.execute(select(Notice)).scalar_one()) == b"the notice as sent"

    # The submission sealed to the old key still opens, and its case key goes to the new key.
    assert take_in_submission(other, waiting_sub)["status"] == "taken_in"
    assert case_signals(other, waiting)[0]["hash"] == "0f" * 16
    assert len(list(settings.keystore_dir.glob("*.key"))) == 2
    for path in settings.keystore_dir.glob("*.key"):
        unseal(active.private_key, path.read_bytes())

    # New submissions, sealed to the new key, are taken in as before.
    new_case, new_sub = submit(other)
    assert take_in_submission(other, new_sub)["status"] == "taken_in"
    assert case_signals(other, new_case)

    # A passphrase change afterwards re-wraps both bundles.
    assert kesu("key", "passphrase", env=env_for(instance)).exit_code == 0
    third = fresh(instance)
    third.unlock(NEW)
    assert third.private_keys(old_id).key_id == old_id

    # An unknown key id stays unknown.
    with pytest.raises(KeyError):
        third.private_keys("0" * 16)


def test_rotation_needs_the_passphrase(instance):
    before = instance.active_key().key_id
    result = kesu("key", "rotate", env=env_for(instance, old="not the passphrase"))
    assert result.exit_code != 0
    with instance.session() as s:
        assert [r.key_id for r in s.execute(select(OrgKey)).scalars()] == [before]
