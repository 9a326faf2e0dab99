"""Valid and invalid case-number look-ups take the same time (DESIGN.md §3).

Measures, interleaved in one run on one instance (SQLite, real Argon2id):
  valid    an existing case number with a wrong passphrase (what a guesser who knows a number sees)
  invalid  a random case number that does not exist
  right    an existing case number with its passphrase (for reference)
both at the core (store.cases.authenticate) and through the HTTP API (status, throttle off),
and prints the medians and the ratio valid/invalid; the target is within 10 %.
Run:  .venv/bin/python bench/bench_case_timing.py [ROUNDS]
"""
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(rounds: int = 30) -> int:
    from crypto.sealing import seal, unb64
    from intake import create_app
    from store import cases
    from store.config import load
    from store.instance import Instance

    folder = Path(tempfile.mkdtemp(prefix="kesu-bench-"))
    settings = load(folder, redis_url="redis://127.0.0.1:1/0", throttle_case_free=10**9, throttle_global_free=10**9)
    inst = Instance(settings)
    inst.init("bench passphrase")
    key_id, public = inst.public_key()
    made = []
    for _ in range(20):
        sealed = seal(unb64(public), json.dumps({"version": 1}).encode())
        number, passphrase, _cid, _sid = cases.create_case(inst, key_id, sealed)
        made.append((number, passphrase))
    client = create_app(Instance(settings)).test_client()
    rng = random.Random(1)

    def unknown():
        while True:
            n = str(rng.randrange(10**11, 10**12))
            if n not in {m for m, _ in made}:
                return n

    kinds = {
        "core valid": lambda: cases.authenticate(inst, rng.choice(made)[0], "wrong-pass-phrase"),
        "core invalid": lambda: cases.authenticate(inst, unknown(), "wrong-pass-phrase"),
        "http valid": lambda: client.get(f"/api/v1/cases/{rng.choice(made)[0]}/status",
                                         headers={"X-Kesu-Passphrase": "wrong-pass-phrase"}),
        "http invalid": lambda: client.get(f"/api/v1/cases/{unknown()}/status",
                                           headers={"X-Kesu-Passphrase": "wrong-pass-phrase"}),
        "http right": lambda: client.get("/api/v1/cases/{}/status".format(made[0][0]),
                                         headers={"X-Kesu-Passphrase": made[0][1]}),
    }
    samples = {k: [] for k in kinds}
    for fn in kinds.values():   # warm up
        fn()
    for _ in range(rounds):
        order = list(kinds.items())
        rng.shuffle(order)      # interleaved and shuffled: drift hits all kinds alike
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    for k, v in med.items():
        print(f"{k:13s} median {v:8.2f} ms  (n={len(samples[k])})")
    ok = True
    for layer in ("core", "http"):
        ratio = med[f"{layer} valid"] / med[f"{layer} invalid"]
        within = abs(ratio - 1) <= 0.10
        ok &= within
        print(f"{layer}: valid/invalid ratio {ratio:.3f} ({'within' if within else 'OUTSIDE'} 10 %)")
    print(f"baseline: a right passphrase costs {med['http right'] / med['http invalid']:.3f}x an invalid look-up")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
