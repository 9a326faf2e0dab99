"""The audit log's end is anchored outside the database (store/audit.py): its head, signed
with the org key, goes into every backup and every evidence export, and a chain cut after
that (the triggers dropped, the last entries deleted: it still verifies on its own) is
caught on restore and by `kesu evidence verify`."""
import json
import sqlite3
from contextlib import closing

import pytest
from click.testing import CliRunner

from store import audit
from store.backup import _write_manifest


@pytest.fixture
def instance(tmp_path):
    from conftest import make_instance
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}")
    with inst.session() as s:
        for i in range(5):
            audit.record(s, "staff:1", "case.open", f"case:{i}")
    return inst


def env_for(settings, **more):
    from conftest import TEST_PASSPHRASE
    return {"KESU_INSTANCE": str(settings.instance), "KESU_DATABASE_URL": settings.database_url,
            "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE, "KESU_KEY_KDF": "interactive", **more}


def kesu(*args, env):
    from cli import cli
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def cut_the_end(sqlite_file, from_id: int) -> None:
    """What someone who can write the database does: drop the trigger, delete the last entries."""
    with closing(sqlite3.connect(sqlite_file)) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        conn.execute("DELETE FROM audit_log WHERE id >= ?", (from_id,))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_backup_carries_the_signed_head_and_a_cut_chain_is_caught_on_restore(instance, tmp_path):
    with instance.session() as s:
        head = audit.head(s)
    assert kesu("backup", str(tmp_path / "b"), env=env_for(instance.settings)).exit_code == 0
    main = next((tmp_path / "b").glob("kesu-*"))
    meta = json.loads((main / "manifest.json").read_text())
    anchor = meta["audit_head"]
    assert anchor["id"] == head["id"] and anchor["hash"] == head["hash"] and anchor["signature"]
    with instance.session() as s:
        assert audit.check_anchor(s, anchor) == []

    target = tmp_path / "restored"
    env = env_for(instance.settings, KESU_INSTANCE=str(target), KESU_DATABASE_URL=f"sqlite:///{target / 'kesu.db'}")
    restored = kesu("restore", str(main), env=env)
    assert restored.exit_code == 0, restored.output

    # The backup's database, cut after it was taken (its file hashes rewritten to match): the
    # chain left verifies on its own, and the signed head shows what is missing.
    cut_the_end(main / meta["database"]["file"], head["id"] - 1)
    with closing(sqlite3.connect(main / meta["database"]["file"])) as conn:
        assert conn.execute("SELECT max(id) FROM audit_log").fetchone()[0] == head["id"] - 2
    _write_manifest(main, {k: v for k, v in meta.items() if k not in ("files", "format")})
    target = tmp_path / "restored-cut"
    env = env_for(instance.settings, KESU_INSTANCE=str(target), KESU_DATABASE_URL=f"sqlite:///{target / 'kesu.db'}")
    refused = kesu("restore", str(main), env=env)
    assert refused.exit_code == 1 and f"ends before entry {head['id']}" in refused.output, refused.output

    # A forged head (another key, or an edited one) is refused too.
    forged = dict(anchor, id=anchor["id"] - 3)
    with instance.session() as s:
        assert "the audit anchor's signature does not verify" in audit.check_anchor(s, forged)


def test_an_export_carries_the_signed_head_and_verify_sees_a_cut_chain(instance, tmp_path):
    from crypto.signing import canonical
    from workers.capture import evidence as ev
    keys = instance.private_keys()
    manifest = {"kesu_manifest": 1, "artifacts": {}, "capture": {"url": "https://example.com/"}}
    body, sig = ev.sign_manifest(manifest, keys)
    with instance.session() as s:
        head = audit.signed_head(s, keys)
    path = tmp_path / "export.zip"
    path.write_bytes(ev.bundle({}, body, sig, audit_head=head))
    env = env_for(instance.settings)
    ok = CliRunner(env=env).invoke(__import__("cli.evidence", fromlist=["x"]).evidence_group, ["verify", str(path)])
    assert ok.exit_code == 0, ok.output
    rep = ev.verify(path, keys.verify_key)
    assert rep["ok"] and rep["audit_head"]["id"] == head["id"]
    # An audit head signed by another key is not ours.
    from crypto import keys as orgkeys
    other = orgkeys.generate()
    with instance.session() as s:
        stranger = audit.signed_head(s, other)
    path.write_bytes(ev.bundle({}, body, sig, audit_head=stranger))
    assert not ev.verify(path, keys.verify_key)["ok"]
    path.write_bytes(ev.pack({ev.MANIFEST: body, ev.SIGNATURE: sig,
                              ev.AUDIT_HEAD: canonical(dict(head, id=1))}))     # edited: signature fails
    assert not ev.verify(path, keys.verify_key)["ok"]
    # The live log cut after the export: verify on this instance says so.
    path.write_bytes(ev.bundle({}, body, sig, audit_head=head))
    cut_the_end(instance.settings.instance / "kesu.db", head["id"])
    res = CliRunner(env=env).invoke(__import__("cli.evidence", fromlist=["x"]).evidence_group, ["verify", str(path)])
    assert res.exit_code == 1 and "its end was cut" in res.output, res.output


def test_kesu_evidence_fingerprint_prints_what_the_pdf_and_notices_print(instance):
    from crypto.signing import fingerprint
    res = kesu("evidence", "fingerprint", env=env_for(instance.settings))
    assert res.exit_code == 0 and fingerprint(instance.private_keys().verify_key) in res.output
    assert "(active" in res.output
