"""No one can lock her out (web/throttle.py, intake/static/js/pow.js).

A simulated day (the clock is moved, nothing sleeps) of an attacker who knows her case
number and guesses as fast as the server allows, both by waiting out every Retry-After and
by solving every challenge at once (as a GPU would); her right passphrase gets in every
time within 30 s. Then the same through the real intake API with real Argon2id, the
browser's solver (pow.js in Node) against the server's check, and the smaller promises:
refused requests create no throttle entries; bad case numbers and bad JSON get a JSON 400.
"""
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from web.throttle import WORK_HEADER, RateLimit, Throttle, Work

ROOT = Path(__file__).resolve().parents[2]
SLOW_PHONE_HASHES_PER_S = 50_000      # a tenth of pow.js in Node on this machine (see the note)


def solve(work: dict) -> str:
    """What pow.js does, in Python: the header value for a challenge."""
    nonces = []
    for i in range(work["count"]):
        nonce = 0
        while True:
            digest = hashlib.sha256(f"{work['challenge']}.{i}.{nonce}".encode()).digest()
            if int.from_bytes(digest, "big") >> (256 - work["bits"]) == 0:
                break
            nonce += 1
        nonces.append(str(nonce))
    return f"{work['challenge']}:{','.join(nonces)}"


def test_a_day_of_guessing_never_keeps_her_out():
    production = Throttle()
    now = [0.0]
    # Production rules; only the puzzle size is small so that Python solves a day of them
    # quickly. Her time is what the production size costs a slow phone.
    gate = Throttle(work_bits=1, work_max_count=production.work.max_count, clock=lambda: now[0])
    her, attacker_checks, her_waits = "her-case", 0, []
    for second in range(86_400):
        now[0] = float(second)
        plain = gate.begin(her)                     # the attacker, the moment a delay ends
        if plain.allowed:
            gate.end(her, ok=False)
            attacker_checks += 1
        elif second % 30 == 0:                      # and solving a challenge twice a minute
            if gate.begin(her, solve(plain.work)).allowed:
                gate.end(her, ok=False)
                attacker_checks += 1
        if second % 600 == 300:                     # she checks her case every ten minutes
            first = gate.begin(her)
            if first.allowed:
                her_waits.append(0.0)
            else:
                work = first.work
                assert work["count"] <= production.work.max_count
                seconds = work["count"] * 2 ** production.work.bits / SLOW_PHONE_HASHES_PER_S
                again = gate.begin(her, solve(work))
                assert again.allowed, f"locked out at {second} s"
                her_waits.append(seconds)
            gate.end(her, ok=True)
    print(f"simulated day: attacker checks {attacker_checks}, her 144 visits: challenged "
          f"{sum(1 for w in her_waits if w)}, longest solve at 50k hashes/s {max(her_waits):.1f} s")
    assert len(her_waits) == 144 and max(her_waits) < 30, max(her_waits)
    assert attacker_checks > 1000                    # the attacker was not simply shut out either...
    # ...but each of its checks after the first few cost it the largest challenge.
    assert gate.failures(her) > 0


def test_a_solution_works_once_for_its_own_case_only():
    now = [0.0]
    gate = Throttle(case_free=0, work_bits=4, clock=lambda: now[0])
    for key in ("a", "b"):
        gate.begin(key)
        gate.end(key, ok=False)
    work = gate.begin("a").work
    solution = solve(work)
    assert not gate.begin("b", solution).allowed        # bound to its case
    assert not gate.begin("a", "é" + solution).allowed   # not ASCII: refused, not an error
    assert gate.begin("a", solution).allowed
    gate.end("a", ok=False)
    assert not gate.begin("a", solution).allowed        # never twice
    assert not gate.begin("a", solution[:-1] + ("1" if solution[-1] != "1" else "2")).allowed
    work = Work(bits=4, ttl=120)
    stale, fresh = (solve(work.challenge("a", 2, now=0.0)) for _ in range(2))
    assert not work.redeem("a", stale, now=121.0)     # expired
    assert work.redeem("a", fresh, now=119.0)


def test_refused_requests_create_no_throttle_entries():
    now = [0.0]
    gate = Throttle(case_free=0, global_free=0, max_keys=1000, clock=lambda: now[0])
    gate.begin("her")
    gate.end("her", ok=False)
    before = len(gate._keys)
    for i in range(5000):                                 # cheap requests, each refused
        assert not gate.begin(f"flood-{i}").allowed
    assert len(gate._keys) == before and gate.failures("her") == 1


def test_registration_past_the_bucket_costs_work_not_a_lockout():
    now = [0.0]
    limit = RateLimit(per_minute=1, burst=2, work_bits=4, clock=lambda: now[0])
    assert limit.take().allowed and limit.take().allowed
    refused = [limit.take() for _ in range(100)]        # a flood: everyone after it waits...
    assert not any(v.allowed for v in refused) and refused[-1].work["count"] > refused[0].work["count"]
    assert limit.take(solve(refused[0].work)).allowed    # ...or solves, and is in


def test_pow_js_solves_the_largest_challenge_the_server_accepts(tmp_path):
    """The browser's solver (in Node) against the server's check, at production size."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (ROOT / "intake/static/vendor/hash-wasm/hash-wasm.mjs").exists():
        pytest.skip("intake/static/vendor is not built")
    work = Work()
    challenge = work.challenge("her-case", work.max_count, time.monotonic())
    script = tmp_path / "solve.mjs"
    script.write_text(f"import {{ solve }} from {json.dumps((ROOT / 'intake/static/js/pow.js').as_uri())};\n"
                      "const t0 = performance.now();\n"
                      "const solution = await solve(JSON.parse(process.argv[2]));\n"
                      "console.log(JSON.stringify({solution, ms: performance.now() - t0}));\n")
    out = json.loads(subprocess.run([node, str(script), json.dumps(challenge)], capture_output=True, text=True,
                                    check=True, timeout=120).stdout)
    assert work.redeem("her-case", out["solution"], time.monotonic())
    rate = challenge["expected_hashes"] / (out["ms"] / 1000)
    print(f"pow.js: {challenge['count']} x {challenge['bits']} bits in {out['ms']:.0f} ms ({rate:,.0f} hashes/s)")
    assert out["ms"] < 30_000


# --- through the intake API -----------------------------------------------------------------

@pytest.fixture(scope="module")
def api_instance(tmp_path_factory):
    """One instance for the API tests here (no Redis: submissions wait in the database)."""
    from conftest import make_instance
    folder = tmp_path_factory.mktemp("lockout") / "inst"
    return make_instance(folder, f"sqlite:///{folder / 'kesu.db'}", redis_url="redis://127.0.0.1:1/0")


@pytest.fixture
def api(api_instance):
    """A fresh intake app (and so a fresh throttle) on the shared instance."""
    from intake import create_app
    from store.instance import Instance
    client = create_app(Instance(api_instance.settings)).test_client()
    # Time stands still, so that a slow Argon2id on a busy machine never lets a delay run out.
    client.application.extensions["kesu.throttle"] = Throttle(case_free=2, work_bits=4, clock=lambda: 0.0)
    return api_instance, client


def _create(inst, client):
    from test_intake_api import sealed_body
    r = client.post("/api/v1/cases", json=sealed_body(inst))
    assert r.status_code == 201
    return r.get_json()


def test_her_passphrase_gets_in_at_once_while_guesses_pile_up(api):
    inst, client = api
    made = _create(inst, client)
    url = f"/api/v1/cases/{made['case_number']}/status"
    codes = [client.get(url, headers={"X-Kesu-Passphrase": f"guess-{i}"}).status_code for i in range(30)]
    assert codes[:2] == [401, 401] and codes.count(429) >= 27
    r = client.get(url, headers={"X-Kesu-Passphrase": made["passphrase"]})
    assert r.status_code == 429 and "Retry-After" in r.headers and r.get_json()["work"]["count"] >= 1
    r = client.get(url, headers={"X-Kesu-Passphrase": made["passphrase"], WORK_HEADER: solve(r.get_json()["work"])})
    assert r.status_code == 200 and r.get_json()["status"] == "received"
    # A wrong passphrase with a solved challenge is checked, and refused like any other.
    replies = [client.get(url, headers={"X-Kesu-Passphrase": "guess"}) for _ in range(3)]   # 2 free, then 429
    work = replies[-1].get_json()["work"]
    assert client.get(url, headers={"X-Kesu-Passphrase": "guess", WORK_HEADER: solve(work)}).status_code == 401


def test_signals_waiting_per_case_are_bounded(api):
    inst, client = api
    from test_intake_api import sealed_body
    made = _create(inst, client)
    url = f"/api/v1/cases/{made['case_number']}/signals"
    headers = {"X-Kesu-Passphrase": made["passphrase"]}
    codes = [client.post(url, json=sealed_body(inst), headers=headers).status_code for _ in range(6)]
    assert codes == [202, 202, 202, 202, 429, 429]       # 1 from registering + 4 added: 5 waiting
    r = client.post(url, json=sealed_body(inst), headers=headers)
    assert r.get_json()["error"] == "still_taking_in" and "work" not in r.get_json()


def test_digits_of_other_scripts_get_a_json_400(api):
    _, client = api
    for number in ("١٢٣٤٥٦٧٨٩٠١٢", "۱۲۳۴۵۶۷۸۹۰۱۲", "१२३४५६७८९०१२"):       # Arabic-Indic, Persian, Devanagari
        r = client.get(f"/api/v1/cases/{number}/status", headers={"X-Kesu-Passphrase": "a-b"})
        assert r.status_code == 400 and r.is_json and r.get_json()["error"] == "malformed"


def test_deeply_nested_json_gets_a_json_400(api):
    inst, client = api
    made = _create(inst, client)
    deep = "[" * 100_000 + "]" * 100_000
    for url in ("/api/v1/cases", f"/api/v1/cases/{made['case_number']}/signals"):
        r = client.post(url, data=deep, content_type="application/json",
                        headers={"X-Kesu-Passphrase": made["passphrase"]})
        assert r.status_code == 400 and r.is_json, (url, r.status_code, r.get_data()[:200])


def test_an_unexpected_error_in_the_api_is_json_without_a_traceback(api):
    _, client = api
    app = client.application
    app.add_url_rule("/api/v1/cases/<case_number>/boom", "boom", lambda case_number: 1 / 0)
    app.testing = False
    r = client.get("/api/v1/cases/123456789012/boom")
    assert r.status_code == 500 and r.is_json and "Traceback" not in r.get_data(True)
    assert client.get("/api/v1/nothing-here").is_json
