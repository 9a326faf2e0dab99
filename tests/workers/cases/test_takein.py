"""workers.cases.takein: open, validate, re-encrypt under the case key, idempotently."""
import copy
import json

import pytest
from sqlalchemy import func, select

from crypto import CryptoError, envelope
from crypto.sealing import seal, unb64
from store import cases
from store.config import load
from store.instance import Instance
from store.models import Case, Item, Signal, Submission
from workers.cases import decrypt, takein

GOOD = {"version": 1, "category": "deepfake", "language": "en", "known_urls": ["https://example.net/a"],
        "contact": None,
        "consent": {"takedown": True, "hotline": False, "share_hashes": True, "at": "2026-03-04", "faces": True},
        "signals": [{"type": "pdq", "hash": "0f" * 32, "quality": 88, "item": "p1", "variant": "crop-1:1"},
                    {"type": "sha256", "hash": "ab" * 32, "item": "p1"},
                    {"type": "md5", "hash": "cd" * 16, "item": "v1"},
                    {"type": "vpdq", "frames": [[0, 70, "12" * 32], [1.0, 71, "34" * 32]], "item": "v1"},
                    {"type": "face", "descriptor": [0.01 * i for i in range(128)], "item": "s1"}],
        "items": [{"item": "p1", "kind": "photo", "label": "from the chat"},
                  {"item": "v1", "kind": "video", "label": "video 1"},
                  {"item": "s1", "kind": "selfie", "label": "selfie 1"}]}


@pytest.fixture
def inst(tmp_path, database_url):
    i = Instance(load(tmp_path / "inst", database_url=database_url))
    i.init("test passphrase")
    return i


def submit(inst, payload, case_id=None, raw=None):
    key_id, public = inst.public_key()
    box = seal(unb64(public), raw if raw is not None else json.dumps(payload).encode())
    if case_id is None:
        _n, _p, case_id, sid = cases.create_case(inst, key_id, box)
        return case_id, sid
    return case_id, cases.add_submission(inst, case_id, key_id, box)


def count(inst, model):
    with inst.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar()


def test_take_in_reencrypts_and_is_idempotent(inst):
    case_id, sid = submit(inst, GOOD)
    result = takein.take_in_submission(inst, sid)
    assert result == {"status": "taken_in", "case": case_id, "items": 3, "signals": 5}
    assert takein.take_in_submission(inst, sid) == {"status": "gone"}     # a retried job
    assert count(inst, Submission) == 0 and count(inst, Signal) == 5 and count(inst, Item) == 3
    assert inst.keystore.exists(case_id)
    signals = decrypt.case_signals(inst, case_id)
    assert signals == GOOD["signals"]
    assert decrypt.item_labels(inst, case_id) == {"p1": "from the chat", "v1": "video 1", "s1": "selfie 1"}
    details = decrypt.case_details(inst, case_id)
    assert details["known_urls"] == ["https://example.net/a"] and details["consent"] == GOOD["consent"]
    with inst.session() as s:
        case = s.get(Case, case_id)
        assert (case.category, case.language) == ("deepfake", "en")
        row = s.execute(select(Signal).where(Signal.type == "pdq")).scalars().one()
        assert b"0f0f" not in row.ciphertext
    # Bound to its place: the same ciphertext under another item or type does not open.
    key = decrypt.case_key(inst, case_id)
    with pytest.raises(CryptoError):
        envelope.decrypt(key, row.ciphertext, cases.signal_aad(case_id, "p2", "pdq"))
    with pytest.raises(CryptoError):
        envelope.decrypt(key, row.ciphertext, cases.signal_aad(case_id + 1, "p1", "pdq"))

    # An add-more keeps the same key, renames a reused item id, merges details, escalates to minor.
    more = copy.deepcopy(GOOD)
    more["category"] = "minor"
    more["known_urls"] = ["https://example.net/b"]
    _c, sid2 = submit(inst, more, case_id)
    assert takein.take_in_pending(inst) == 1
    assert count(inst, Item) == 6
    with inst.session() as s:
        assert set(s.execute(select(Item.item)).scalars()) == {"p1", "v1", "s1", "p1-2", "v1-2", "s1-2"}
        assert s.get(Case, case_id).category == "minor"
    assert decrypt.case_details(inst, case_id)["known_urls"] == ["https://example.net/a", "https://example.net/b"]

    cases.withdraw(inst, case_id)
    assert not inst.keystore.exists(case_id)
    assert count(inst, Signal) == count(inst, Item) == count(inst, Case) == 0


BROKEN = [
    ("version", lambda p: p.update(version=2)),
    ("category", lambda p: p.update(category="other")),
    ("consent.takedown", lambda p: p["consent"].update(takedown=False)),
    ("consent.at", lambda p: p["consent"].update(at="2026-02-30")),
    ("pdq hash", lambda p: p["signals"][0].update(hash="XYZ")),
    ("pdq variant", lambda p: p["signals"][0].update(variant="crop-2:1")),
    ("faces are taken from selfies and source photos only", lambda p: p["signals"][4].update(item="p1")),
    ("face descriptor", lambda p: p["signals"][4].update(descriptor=[0.1] * 127)),
    ("vpdq frames", lambda p: p["signals"][3].update(frames=[[0, 70, "nothex"]])),
    ("must name one of items", lambda p: p["signals"][1].update(item="zz")),
    ("unknown fields", lambda p: p.update(name="Hanako")),
    ("items[].item must be unique", lambda p: p["items"].append(dict(p["items"][0]))),
    ("known_urls", lambda p: p.update(known_urls=["javascript:alert(1)"])),
    ("contact.email", lambda p: p.update(contact={"email": "nope"})),
]


@pytest.mark.parametrize("rule,breaks", BROKEN, ids=[b[0] for b in BROKEN])
def test_validation_names_the_broken_rule(rule, breaks):
    payload = copy.deepcopy(GOOD)
    breaks(payload)
    with pytest.raises(takein.PayloadError, match=rule.split(" ")[0].replace("[", r"\[").replace("]", r"\]")):
        takein.validate(payload)


def test_source_photos_carry_pdq_and_a_face_and_no_file_hash():
    """Her ordinary photos (DESIGN §6.3 #source-photos): searched by PDQ and face, a kind of
    their own so nothing treats them as intimate content; an exact file hash is not theirs."""
    payload = copy.deepcopy(GOOD)
    payload["items"].append({"item": "o1", "kind": "source", "label": "photo of me 1"})
    payload["signals"] += [{"type": "pdq", "hash": "1e" * 32, "quality": 90, "item": "o1", "variant": "full"},
                           {"type": "face", "descriptor": [0.02 * i for i in range(128)], "item": "o1"}]
    assert takein.validate(copy.deepcopy(payload))
    payload["signals"].append({"type": "sha256", "hash": "ef" * 32, "item": "o1"})
    with pytest.raises(takein.PayloadError, match="file hashes belong to photos and videos"):
        takein.validate(payload)
    payload["signals"].pop()
    payload["items"][-1]["kind"] = "intimate"
    with pytest.raises(takein.PayloadError, match="kind must be photo, video, selfie, source"):
        takein.validate(payload)


def test_garbage_is_rejected_and_never_stored(inst):
    assert takein.validate(copy.deepcopy(GOOD))
    for raw in (b"\xff\xfe not utf-8", b"not json", b"[1, 2, 3]", json.dumps(dict(GOOD, version="1")).encode()):
        case_id, sid = submit(inst, None, raw=raw)
        result = takein.take_in_submission(inst, sid)
        assert result["status"] == "rejected" and result["reason"]
    # A box sealed to another key cannot be opened: rejected too.
    from nacl.public import PrivateKey
    key_id, _public = inst.public_key()
    other = bytes(PrivateKey.generate().public_key)
    _n, _p, _c, sid = cases.create_case(inst, key_id, seal(other, json.dumps(GOOD).encode()))
    assert takein.take_in_submission(inst, sid) == {"status": "rejected", "reason": "CryptoError"}
    assert count(inst, Submission) == 0 and count(inst, Signal) == 0 and count(inst, Item) == 0


def test_take_in_job_uses_the_worker_instance(inst):
    from workers.system import context
    _case, sid = submit(inst, GOOD)
    context.set_instance(inst)
    assert takein.take_in(sid)["status"] == "taken_in"
