"""The intake JSON API (§6.3) against a real database, real Redis and real Argon2id.

Throttle delays are configured short (seconds, not minutes) so waiting them out fits in a
test; the rules are the production ones.
"""
import json
import time

import pytest
import redis
from sqlalchemy import func, select

import crypto.passphrases
from crypto.sealing import b64, seal
from store import cases
from store.config import load
from store.instance import Instance
from store.models import Case, Submission
from workers.jobs import rq_form

GOOD = {"version": 1, "category": "adult_ncii", "language": "ja", "known_urls": [], "contact": None,
        "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-01-02"},
        "signals": [{"type": "sha256", "hash": "ab" * 32, "item": "p1"}],
        "items": [{"item": "p1", "kind": "photo", "label": "photo 1"}]}


def make_instance(tmp_path, database_url, redis_url=None, **extra):
    settings = load(tmp_path / "inst", database_url=database_url, redis_url=redis_url or "redis://127.0.0.1:1/0",
                    **extra)
    inst = Instance(settings)
    inst.init("test passphrase")
    return inst


@pytest.fixture
def inst(tmp_path, database_url, redis_url):
    return make_instance(tmp_path, database_url, redis_url, throttle_case_cap=2, throttle_global_cap=2,
                         throttle_global_free=12)


@pytest.fixture
def client(inst):
    from intake import create_app
    intake_side = Instance(inst.settings)          # the intake never holds the private key
    return create_app(intake_side).test_client()


def sealed_body(inst, payload=GOOD):
    key_id, public = inst.public_key()
    from crypto.sealing import unb64
    return {"key_id": key_id, "sealed": b64(seal(unb64(public), json.dumps(payload).encode()))}


def create(client, inst, payload=GOOD):
    r = client.post("/api/v1/cases", json=sealed_body(inst, payload))
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def made_id(inst):
    with inst.session() as s:
        return s.execute(select(Submission.id)).scalar()


def test_create_status_add_delete_withdraw(client, inst, redis_url):
    r = client.get("/api/v1/key")
    assert r.status_code == 200 and set(r.get_json()) == {"key_id", "public_key"}
    made = create(client, inst)
    number, passphrase = made["case_number"], made["passphrase"]
    assert len(number) == 12 and number.isdigit()
    assert len(passphrase.split("-")) == crypto.passphrases.word_count("en") and passphrase.isascii()
    assert "Set-Cookie" not in r.headers
    # Enqueued by id only.
    from rq import Queue
    jobs = [j for j in Queue("default", connection=redis.Redis.from_url(redis_url)).jobs
            if (j.func_name, j.args[:1]) == rq_form("take_in")]
    assert len(jobs) == 1 and (jobs[0].func_name, jobs[0].args) == rq_form("take_in", made_id(inst))
    with inst.session() as s:
        assert s.execute(select(func.count()).select_from(Submission)).scalar() == 1
        row = s.execute(select(Case)).scalars().one()
        assert row.number_hash == cases.number_key(inst.pepper, number) and number not in row.number_hash

    h = {"X-Kesu-Passphrase": passphrase}
    r = client.get(f"/api/v1/cases/{number}/status", headers=h)
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "received" and body["found"] == 0 and body["requested"] == 0 and body["removed"] == 0
    assert len(body["updated"]) == 10

    # Full-width digits and a passphrase typed in capitals with spaces still work.
    wide = "".join(chr(ord(c) + 0xFEE0) for c in number)
    r = client.get(f"/api/v1/cases/{wide}/status", headers={"X-Kesu-Passphrase": passphrase.upper().replace("-", " ")})
    assert r.status_code == 200

    from workers.cases.takein import take_in_pending
    assert take_in_pending(inst) == 1
    assert client.get(f"/api/v1/cases/{number}/status", headers=h).get_json()["items"] == [{"item": "p1", "kind": "photo"}]

    more = dict(GOOD, items=[{"item": "p1", "kind": "photo", "label": "again"}])
    r = client.post(f"/api/v1/cases/{number}/signals", json=sealed_body(inst, more), headers=h)
    assert r.status_code == 202
    assert take_in_pending(inst) == 1
    items = client.get(f"/api/v1/cases/{number}/status", headers=h).get_json()["items"]
    assert [i["item"] for i in items] == ["p1", "p1-2"]

    assert client.delete(f"/api/v1/cases/{number}/items/p1", headers=h).status_code == 204
    assert client.delete(f"/api/v1/cases/{number}/items/p1", headers=h).status_code == 404
    assert client.delete(f"/api/v1/cases/{number}", headers={"X-Kesu-Passphrase": "wrong"}).status_code == 401
    assert client.delete(f"/api/v1/cases/{number}", headers=h).status_code == 204
    assert client.get(f"/api/v1/cases/{number}/status", headers=h).status_code == 401
    with inst.session() as s:
        assert s.execute(select(func.count()).select_from(Case)).scalar() == 0
    assert not any(inst.settings.keystore_dir.glob("*.key"))


def test_a_japanese_page_gets_a_japanese_passphrase_sent_percent_encoded(client, inst):
    from urllib.parse import quote
    made = client.post("/api/v1/cases", json=dict(sealed_body(inst), language="ja")).get_json()
    number, passphrase = made["case_number"], made["passphrase"]
    assert not passphrase.isascii() and len(passphrase.split("-")) == crypto.passphrases.word_count("ja")
    # Without "language", Accept-Language decides.
    other = client.post("/api/v1/cases", json=sealed_body(inst), headers={"Accept-Language": "ja,en;q=0.5"}).get_json()
    assert not other["passphrase"].isascii()
    # Typed in katakana with ideographic spaces, percent-encoded UTF-8 in the header (§6.3).
    typed = "\u3000".join("".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else c for c in w)
                          for w in passphrase.split("-"))
    r = client.get(f"/api/v1/cases/{number}/status", headers={"X-Kesu-Passphrase": quote(typed)})
    assert r.status_code == 200
    wrong = quote(passphrase.replace("-", " ", 1)[:-1])
    assert client.get(f"/api/v1/cases/{number}/status", headers={"X-Kesu-Passphrase": wrong}).status_code == 401


def test_bad_bodies(client, inst):
    assert client.post("/api/v1/cases", data=b"not json", content_type="application/json").status_code == 400
    assert client.post("/api/v1/cases", json=[1, 2]).status_code == 400
    assert client.post("/api/v1/cases", json={"key_id": "x", "sealed": "%%%"}).status_code == 400
    assert client.post("/api/v1/cases", json={"key_id": inst.public_key()[0], "sealed": b64(b"short")}).status_code == 400
    r = client.post("/api/v1/cases", json=dict(sealed_body(inst), key_id="0123456789abcdef"))
    assert r.status_code == 409
    big = b64(b"x" * (inst.settings.max_submission_bytes + 10))
    r = client.post("/api/v1/cases", json={"key_id": inst.public_key()[0], "sealed": big})
    assert r.status_code == 413 and r.get_json()["error"] == "too_large"
    with inst.session() as s:
        assert s.execute(select(func.count()).select_from(Case)).scalar() == 0


def test_unknown_and_wrong_are_alike_and_cost_one_argon2id(client, inst, monkeypatch):
    made = create(client, inst)
    calls = []
    real = crypto.passphrases.verify_secret

    def counting(pepper, stored, secret):
        calls.append(stored is not None)
        return real(pepper, stored, secret)
    monkeypatch.setattr(crypto.passphrases, "verify_secret", counting)

    wrong = client.get(f"/api/v1/cases/{made['case_number']}/status", headers={"X-Kesu-Passphrase": "a-b-c"})
    unknown_number = "1" + "0" * 11 if made["case_number"] != "1" + "0" * 11 else "2" + "0" * 11
    unknown = client.get(f"/api/v1/cases/{unknown_number}/status", headers={"X-Kesu-Passphrase": "a-b-c"})
    garbage = client.get("/api/v1/cases/not-a-number/status")
    assert wrong.status_code == unknown.status_code == garbage.status_code == 401
    assert wrong.get_data() == unknown.get_data() == garbage.get_data()
    assert calls == [True, False, False]          # one Argon2id each, the unknown ones too
    for method, path in (("post", "signals"), ("delete", "items/p1"), ("delete", "")):
        r = getattr(client, method)(f"/api/v1/cases/{unknown_number}/{path}".rstrip("/"),
                                    json=sealed_body(inst), headers={"X-Kesu-Passphrase": "x"})
        assert r.status_code == 401 and r.get_data() == unknown.get_data()
    assert len(calls) == 6


def _wait_then(client, url, headers, deadline):
    """Send until something other than 429 comes back, honouring Retry-After."""
    while True:
        r = client.get(url, headers=headers)
        if r.status_code != 429:
            return r
        assert "Retry-After" in r.headers
        assert time.monotonic() + int(r.headers["Retry-After"]) < deadline, "throttled beyond the cap"
        time.sleep(int(r.headers["Retry-After"]))   # waiting as told, not a fixed sleep


def test_brute_force_one_case_is_slowed_never_locked(client, inst):
    made = create(client, inst)
    url = f"/api/v1/cases/{made['case_number']}/status"
    codes, waits = [], []
    for i in range(1000):
        r = client.get(url, headers={"X-Kesu-Passphrase": f"wrong-guess-{i}"})
        codes.append(r.status_code)
        if r.status_code == 429:
            waits.append(int(r.headers["Retry-After"]))
    assert set(codes) == {401, 429}
    assert codes.count(401) < 20, "guesses must be slowed"
    assert codes.count(429) > 950 and min(waits) >= 1
    r = _wait_then(client, url, {"X-Kesu-Passphrase": made["passphrase"]}, time.monotonic() + 10)
    assert r.status_code == 200


def test_brute_force_across_cases_is_slowed_globally(client, inst):
    made = create(client, inst)
    codes = []
    for i in range(1000):
        r = client.get(f"/api/v1/cases/{900000000000 + i}/status", headers={"X-Kesu-Passphrase": "guess"})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
    assert codes.count(429) > 900, "guessing across many cases must be slowed too"
    assert codes.count(401) < 30
    r = _wait_then(client, f"/api/v1/cases/{made['case_number']}/status",
                   {"X-Kesu-Passphrase": made["passphrase"]}, time.monotonic() + 10)
    assert r.status_code == 200


def test_growing_delays():
    from web.throttle import Throttle
    now = [0.0]
    t = Throttle(case_free=3, case_base=1, case_cap=64, global_free=10**6, clock=lambda: now[0])
    waits = []
    for _ in range(12):
        wait = t.begin("k").wait
        waits.append(wait)
        if wait:
            now[0] += wait
            assert t.begin("k").allowed
        t.end("k", ok=False)
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 64, 64]
    now[0] += 64
    assert t.begin("k").allowed
    t.end("k", ok=True)                       # the right passphrase resets her own case
    assert t.begin("k").allowed
    t.end("k", ok=False)
    # Parallel plain guesses on one case cannot slip through together.
    assert t.begin("other").allowed and not t.begin("other").allowed


def test_no_redis_leaves_submission_for_take_in(tmp_path, database_url):
    inst = make_instance(tmp_path, database_url)           # redis_url points at a closed port
    from intake import create_app
    client = create_app(Instance(inst.settings)).test_client()
    create(client, inst)
    with inst.session() as s:
        assert s.execute(select(func.count()).select_from(Submission)).scalar() == 1
    from workers.cases.takein import take_in_pending
    assert take_in_pending(inst) == 1
    with inst.session() as s:
        assert s.execute(select(func.count()).select_from(Submission)).scalar() == 0


def test_seal_js_in_node_opens_in_python(tmp_path):
    """intake/static/js/seal.js (what browsers run) makes boxes the org key opens."""
    import shutil
    import subprocess
    from pathlib import Path

    from nacl.public import PrivateKey

    from crypto.sealing import unseal
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    private = PrivateKey.generate()
    seal_js = Path(__file__).resolve().parents[2] / "intake" / "static" / "js" / "seal.js"
    script = tmp_path / "seal.mjs"
    script.write_text(
        f"import {{ seal, toBase64 }} from {json.dumps(seal_js.as_uri())};\n"
        "const msg = new TextEncoder().encode(process.argv[3]);\n"
        "process.stdout.write(await toBase64(await seal(process.argv[2], msg)));\n")
    message = json.dumps(GOOD, ensure_ascii=False) + " 日本語"
    out = subprocess.run([node, str(script), b64(bytes(private.public_key)), message],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    from crypto.sealing import unb64
    assert unseal(bytes(private), unb64(out)).decode("utf-8") == message
    bad = subprocess.run([node, str(script), b64(b"short"), "x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0


def test_registering_is_rate_limited(tmp_path, database_url):
    inst = make_instance(tmp_path, database_url, throttle_create_per_minute=20, throttle_create_burst=2)
    from intake import create_app
    client = create_app(Instance(inst.settings)).test_client()
    body = sealed_body(inst)
    codes = [client.post("/api/v1/cases", json=body).status_code for _ in range(2)]
    assert codes == [201, 201]
    r = client.post("/api/v1/cases", json=body)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 3
    time.sleep(int(r.headers["Retry-After"]))        # as told
    assert client.post("/api/v1/cases", json=body).status_code == 201
