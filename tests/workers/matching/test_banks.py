"""Hash sharing only with consent, and imported banks matched like cases: real instances
(SQLite, and PostgreSQL when configured), cases taken in through the sealed-box path, the real
matcher (workers.matching.matcher) asked with server-side signals of the same generated images."""
import csv
import hashlib
import io
import json

import pytest
from click.testing import CliRunner
from conftest import TEST_PASSPHRASE, make_instance
from pipeline import picture
from sqlalchemy import select

from crypto.sealing import seal
from store import cases
from store.models import AuditEntry, Case, Item, Signal
from workers.matching import banks
from workers.matching import matcher as match
from workers.signals.images import decode_image, pdq_variants
from workers.signals.media import body_signals
from workers.system import context


@pytest.fixture(autouse=True)
def fresh_matcher():
    match.reset()
    yield
    match.reset()


def registered(data: bytes, item: str) -> list[dict]:
    """What the victim's browser sends for one photo: PDQ variants, SHA-256 and MD5."""
    sigs = [{"type": "pdq", "item": item, **v} for v in pdq_variants(decode_image(data))]
    sigs.append({"type": "sha256", "hash": hashlib.sha256(data).hexdigest(), "item": item})
    sigs.append({"type": "md5", "hash": hashlib.md5(data).hexdigest(), "item": item})
    return sigs


def new_case(instance, photos: list[bytes], share: bool, category="adult_ncii") -> int:
    signals, items = [], []
    for i, data in enumerate(photos, 1):
        signals += registered(data, f"p{i}")
        items.append({"item": f"p{i}", "kind": "photo", "label": f"photo {i}"})
    payload = {"version": 1, "category": category, "language": "ja",
               "consent": {"takedown": True, "hotline": False, "share_hashes": share, "at": "2026-11-22"},
               "signals": signals, "items": items}
    key_id, _ = instance.public_key()
    sealed = seal(instance.private_keys().public_key, json.dumps(payload).encode())
    _, _, case_id, sub_id = cases.create_case(instance, key_id, sealed)
    from workers.cases.takein import take_in_submission
    assert take_in_submission(instance, sub_id)["status"] == "taken_in"
    return case_id


def query(data: bytes) -> dict:
    """The crawled side: the server's signals of the bytes (faces off: none in these pictures)."""
    return {**body_signals(data, faces=False), "url": "http://site.example/x.jpg"}


def audit_rows(instance, action):
    with instance.session() as s:
        return s.execute(select(AuditEntry).where(AuditEntry.action == action)).scalars().all()


def test_export_is_refused_without_consent_and_audited(instance):
    a = picture(1)
    case_id = new_case(instance, [a], share=False)
    for fmt in ("hma", "csv"):
        with pytest.raises(banks.ConsentError, match="did not consent"):
            banks.export_case(instance, case_id, fmt, actor="staff:1")
    refused = audit_rows(instance, "hashes.export_refused")
    assert len(refused) == 2 and refused[0].target == f"case:{case_id}"
    assert not audit_rows(instance, "hashes.export")
    # the CLI says so clearly and writes no file
    out = instance.settings.instance.parent / "out.csv"
    result = CliRunner().invoke(_cli(), ["hashes", "export", str(case_id), "--format", "csv", "--out", str(out)],
                                env=_env(instance))
    assert result.exit_code == 1 and "did not consent" in result.output and not out.exists()


def test_export_with_consent_in_both_formats(instance):
    a, b = picture(2), picture(3)
    case_id = new_case(instance, [a, b], share=True)
    want_pdq = {v["hash"] for d in (a, b) for v in pdq_variants(decode_image(d)) if v["quality"] >= 50}
    want_md5 = {hashlib.md5(a).hexdigest(), hashlib.md5(b).hexdigest()}

    data, summary = banks.export_case(instance, case_id, "csv", actor="staff:1")
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == ["signal_type", "signal_value"]
    assert {v for t, v in rows[1:] if t == "pdq"} == want_pdq
    assert {v for t, v in rows[1:] if t == "md5"} == want_md5
    assert {t for t, _ in rows[1:]} == {"pdq", "md5"}
    assert hashlib.sha256(a).hexdigest() not in data.decode()        # only PDQ and MD5 leave
    assert summary["pdq"] == len(want_pdq) and summary["md5"] == 2

    data, summary = banks.export_case(instance, case_id, "hma", actor="staff:1")
    lines = [json.loads(x) for x in data.decode().splitlines()]
    assert all(len(x) == 1 for x in lines)
    assert {x["pdq"] for x in lines} == want_pdq                     # HMA's "pdq" signal type
    assert summary["left_out"] == 2                                  # photo MD5s: no HMA type
    entries = audit_rows(instance, "hashes.export")
    assert [e.detail["format"] for e in entries] == ["csv", "hma"]
    text = json.dumps([e.detail for e in entries])
    assert not any(h in text for h in want_pdq | want_md5)          # the audit names counts, never a hash


def test_exported_bank_reimported_into_a_fresh_instance_matches_the_same_images(instance, tmp_path, database_url):
    a, b, other = picture(11), picture(12), picture(13)
    case_id = new_case(instance, [a, b], share=True)
    hma, _ = banks.export_case(instance, case_id, "hma", actor="cli")
    plain, _ = banks.export_case(instance, case_id, "csv", actor="cli")

    fresh = make_instance(tmp_path / "fresh", f"sqlite:///{tmp_path / 'fresh.db'}")   # another organisation
    context.set_instance(fresh)
    got = banks.import_bank(fresh, hma, "PARTNER_NCII", actor="cli", category="adult_ncii", notify=False)
    assert got["added"] > 0 and got["skipped"] == 0
    again = banks.import_bank(fresh, hma, "PARTNER_NCII", actor="cli", notify=False)
    assert again["added"] == 0 and again["known"] == got["added"]   # idempotent per hash
    bank_id = got["case"]
    with fresh.session() as s:
        bank = s.get(Case, bank_id)
        assert bank.bank == "PARTNER_NCII" and bank.category == "adult_ncii"
        blobs = b"".join(r.ciphertext for r in s.execute(select(Signal).where(Signal.case_id == bank_id)).scalars())
        assert s.execute(select(Item).where(Item.case_id == bank_id)).scalars().first() is not None
    first_pdq = json.loads(hma.decode().splitlines()[0])["pdq"]
    assert first_pdq.encode() not in blobs                           # stored encrypted, like a case's signals
    # a bank is never re-shared
    with pytest.raises(banks.ConsentError, match="bank"):
        banks.export_case(fresh, bank_id, "csv", actor="cli")

    for data in (a, b):
        found = match.match_media(fresh, query(data), url="http://site.example/x.jpg")
        assert {(c["case"], c["kind"]) for c in found} == {(bank_id, "pdq")}
        assert all(c["distance"] <= 31 for c in found)
    assert match.match_media(fresh, query(other)) == []

    # the plain CSV as a second bank: MD5 matches too, and a "minor" bank is routed as minor
    got2 = banks.import_bank(fresh, plain, "HOTLINE_LIST", actor="cli", category="minor", notify=False)
    match.refresh(fresh)
    found = match.match_media(fresh, query(a))
    kinds = {(c["case"], c["kind"]) for c in found}
    assert (got2["case"], "md5") in kinds and (got2["case"], "pdq") in kinds
    assert {c.get("category") for c in found if c["case"] == got2["case"]} == {"minor"}
    # importing it again without naming the category keeps it minor (no bytes ever kept)
    banks.import_bank(fresh, plain, "HOTLINE_LIST", actor="cli", notify=False)
    with fresh.session() as s:
        assert s.get(Case, got2["case"]).category == "minor"

    # removing a bank takes it out of matching
    assert banks.delete_bank(fresh, "HOTLINE_LIST", actor="cli") == got2["case"]
    match.refresh(fresh)
    assert {c["case"] for c in match.match_media(fresh, query(a))} == {bank_id}


def test_cli_export_and_import(instance, tmp_path, database_url):
    a = picture(21)
    case_id = new_case(instance, [a], share=True)
    out = tmp_path / "bank.jsonl"
    r = CliRunner().invoke(_cli(), ["hashes", "export", str(case_id), "--format", "hma", "--out", str(out)],
                           env=_env(instance))
    assert r.exit_code == 0, r.output
    assert out.stat().st_mode & 0o077 == 0                           # readable by its owner only
    assert all("pdq" in json.loads(line) for line in out.read_text().splitlines())
    r = CliRunner().invoke(_cli(), ["hashes", "import", str(out), "--bank", "OWN_EXPORT", "--category", "deepfake"],
                           env=_env(instance))
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout.strip().splitlines()[-1])
    with instance.session() as s:
        assert s.get(Case, result["case"]).category == "deepfake"
    r = CliRunner().invoke(_cli(), ["hashes", "import", str(out), "--bank", "bad name!"], env=_env(instance))
    assert r.exit_code == 1 and "bank name" in r.output


def test_parse_accepts_the_usual_bank_files():
    pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    md5 = "cab08b36195edb1a1231d2d09fa450e0"
    files = [
        f'{{"pdq": "{pdq}"}}\n{{"video_md5": "{md5}"}}\n',                                  # HMA JSON lines
        json.dumps([{"pdq": pdq}, {"video_md5": md5}]),                                      # HMA JSON array
        f"collab,signal_type,signal_str,category,tags\nx,pdq,{pdq},POSITIVE_CLASS,\nx,video_md5,{md5},POSITIVE_CLASS,\n",
        f"pdq {pdq}\nvideo_md5 {md5}\n",                                                     # ThreatExchange file
        f"\ufeffsignal_type,signal_value\npdq,{pdq}\nmd5,{md5}\nsha1,abc\n",
    ]
    for text in files:
        got, skipped = banks.parse_bank(text.encode())
        assert [(t, v) for t, _, v in got] == [("pdq", pdq), ("md5", md5)], text
    assert banks.parse_bank(files[-1].encode())[1] == 1
    with pytest.raises(banks.BankError):
        banks.parse_bank(b"")
    with pytest.raises(banks.BankError):
        banks.parse_bank(b"{not json")


# --- the CLI group, run through click against this instance ---------------------------------------

def _cli():
    import click

    from cli.hashes import hashes_group

    @click.group()
    def root():
        pass
    root.add_command(hashes_group, "hashes")
    return root


def _env(instance):
    return {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
            "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}
