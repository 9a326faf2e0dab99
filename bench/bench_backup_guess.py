"""What one guess costs an attacker holding a stolen main backup (issue 14 item 10).

Before: the backup held secrets/pepper in clear, so a guessed case number is checked with one
HMAC-SHA-256 (baseline, measured here). Now the pepper is sealed to the org key: a guess must
first open the org key bundle, one Argon2id of the key passphrase at the instance's profile
("moderate" by default), and the passphrase space (>= 12 characters chosen by the admin) replaces
the 12-digit case-number space. Prints guesses per second per core for both and their ratio.

    .venv/bin/python bench/bench_backup_guess.py
"""
import hashlib
import hmac
import time

from crypto import keys as orgkeys


def per_second(fn, seconds: float = 2.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    pepper = b"p" * 32
    number = iter(range(10 ** 11, 10 ** 12))
    hmac_rate = per_second(lambda: hmac.new(pepper, b"case-number:%d" % next(number), hashlib.sha256).digest())
    bundle = orgkeys.wrap(orgkeys.generate(), "the right passphrase", *orgkeys.KDF_PROFILES["moderate"])

    def guess():
        try:
            orgkeys.unwrap(bundle, "a wrong passphrase")
        except orgkeys.WrongPassphrase:
            pass
    argon_rate = per_second(guess, seconds=5.0)
    space = 9 * 10 ** 11
    print(f"HMAC per guess (before): {hmac_rate:,.0f}/s per core; all 12-digit numbers: "
          f"{space / hmac_rate / 86400:,.1f} core-days")
    print(f"org key passphrase per guess (now, moderate Argon2id): {argon_rate:,.2f}/s per core "
          f"({1 / argon_rate:.2f} s each)")
    print(f"ratio (cost per guess, now / before): {hmac_rate / argon_rate:,.0f}x")


if __name__ == "__main__":
    main()
