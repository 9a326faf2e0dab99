"""Guessing is slowed, per key and globally; the rightful owner is never locked out.

Keys are HMACs (of a case number, of a staff e-mail), never the values, and live in this
process's memory only (each app is one waitress process), never in Redis; no address is
used. After `case_free` wrong tries for one key each further try must wait a delay that
doubles per failure up to `case_cap`; many wrong tries across all keys add a global delay.

A delay alone would let anyone who knows her case number keep her out (one wrong guess
each time the delay ends). So a throttled request is answered 429 with Retry-After *and* a
proof-of-work challenge (DESIGN.md §6.3): a request that carries a solved, fresh, unused
challenge for its key goes through at once, whatever the delays say. The work grows with
the failures and is capped so that a phone's browser solves the largest challenge in well
under 30 s (intake/static/js/pow.js); a client that does not solve it simply waits. Each
solution buys exactly one password check, so guessing costs work as well as time.

Only requests that reach a check create or change an entry: a 429 touches nothing, so a
flood of refused requests cannot push a throttled key out of the table.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

WORK_HEADER = "X-Kesu-Work"


@dataclass
class _Entry:
    failures: int = 0
    next_allowed: float = 0.0
    last: float = 0.0
    running: int = 0          # look-ups in progress without a solved challenge


@dataclass(frozen=True)
class Verdict:
    wait: float               # 0: go ahead (then call end()); else seconds until a plain retry
    work: dict | None = None  # the challenge that lets the request through now, once solved

    @property
    def allowed(self) -> bool:
        return self.wait <= 0


def _leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


class Work:
    """Stateless challenges (MAC'd with a key made at start), each accepted once.

    A challenge is `count` puzzles of `bits` bits: for each i, SHA-256 of
    "<challenge>.<i>.<nonce>" must start with `bits` zero bits. Many small puzzles instead of
    one big one keep the time to solve steady."""

    def __init__(self, bits: int = 12, max_count: int = 128, ttl: float = 120.0,
                 max_used: int = 200_000, clock=time.monotonic):
        self.bits, self.max_count, self.ttl, self.max_used = bits, max_count, ttl, max_used
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._used: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def scope_of(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, key: str, count: int, now: float) -> dict:
        count = max(1, min(self.max_count, count))
        body = f"v1.{self.scope_of(key)}.{int(now + self.ttl)}.{self.bits}.{count}.{secrets.token_hex(8)}"
        return {"challenge": f"{body}.{self._mac(body)}", "bits": self.bits, "count": count,
                "expected_hashes": count * 2 ** self.bits}

    def redeem(self, key: str, solution: str | None, now: float) -> bool:
        """True (once) for a solved, unexpired challenge issued for `key`. Call under a lock."""
        if not solution or len(solution) > 8192 or not solution.isascii():
            return False
        challenge, _, nonces = solution.rpartition(":")
        parts = challenge.split(".")
        if len(parts) != 7 or parts[0] != "v1":
            return False
        _, scope, expires, bits, count, _rand, mac = parts
        if not hmac.compare_digest(mac, self._mac(".".join(parts[:6]))) or scope != self.scope_of(key):
            return False
        if int(expires) < now or challenge in self._used:
            return False
        values = nonces.split(",")
        if len(values) != int(count) or not all(v.isascii() and v.isdigit() and len(v) <= 20 for v in values):
            return False
        for i, nonce in enumerate(values):
            digest = hashlib.sha256(f"{challenge}.{i}.{nonce}".encode()).digest()
            if _leading_zero_bits(digest) < int(bits):
                return False
        self._used[challenge] = float(expires)
        while self._used and (len(self._used) > self.max_used or next(iter(self._used.values())) < now):
            self._used.popitem(last=False)
        return True


class Throttle:
    def __init__(self, case_free: int = 5, case_base: float = 1.0, case_cap: float = 300.0,
                 global_free: int = 60, global_window: float = 60.0, global_base: float = 0.5,
                 global_step: float = 20.0, global_cap: float = 30.0, forget_after: float = 86400.0,
                 max_keys: int = 200_000, work_bits: int = 12, work_max_count: int = 128,
                 clock=time.monotonic):
        self.case_free, self.case_base, self.case_cap = case_free, case_base, case_cap
        self.global_free, self.global_window = global_free, global_window
        self.global_base, self.global_step, self.global_cap = global_base, global_step, global_cap
        self.forget_after, self.max_keys = forget_after, max_keys
        self.clock = clock
        self.work = Work(bits=work_bits, max_count=work_max_count, clock=clock)
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, _Entry] = OrderedDict()
        self._failures: deque[float] = deque()
        self._global_next = 0.0

    @classmethod
    def from_settings(cls, settings) -> "Throttle":
        """Tuning from the instance config (config.toml keys `throttle_*`); defaults otherwise."""
        extra = getattr(settings, "extra", {}) or {}
        names = ("case_free", "case_base", "case_cap", "global_free", "global_window", "global_base",
                 "global_step", "global_cap", "work_bits", "work_max_count")
        kwargs = {n: float(extra["throttle_" + n]) for n in names if "throttle_" + n in extra}
        for n in ("case_free", "global_free", "work_bits", "work_max_count"):
            if n in kwargs:
                kwargs[n] = int(kwargs[n])
        return cls(**kwargs)

    # --- the two calls around one check -------------------------------------------------------
    def begin(self, key: str, solution: str | None = None) -> Verdict:
        """Whether a check for `key` may run now. A solved challenge always may; then call end()."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            entry = self._keys.get(key)
            if self.work.redeem(key, solution, now):
                self._admit(key, entry, now)
                return Verdict(0.0)
            wait = max(entry.next_allowed - now if entry else 0.0, self._global_next - now, 0.0)
            if wait <= 0 and entry is not None and entry.running:
                wait = 1.0            # parallel plain guesses cannot slip past the delay together
            if wait > 0:
                return Verdict(wait, self.work.challenge(key, self._work_count(entry), now))
            self._admit(key, entry, now)
            return Verdict(0.0)

    def end(self, key: str, ok: bool) -> None:
        with self._lock:
            now = self.clock()
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = _Entry()
            entry.running = max(0, entry.running - 1)
            entry.last = now
            if ok:
                entry.failures = 0
                entry.next_allowed = 0.0
                return
            entry.failures += 1
            over = entry.failures - self.case_free
            if over >= 0:
                entry.next_allowed = now + min(self.case_cap, self.case_base * 2.0 ** over)
            self._failures.append(now)
            self._expire(now)
            excess = len(self._failures) - self.global_free
            if excess > 0:
                delay = min(self.global_cap, self.global_base * 2.0 ** (excess / self.global_step))
                self._global_next = max(self._global_next, now + delay)

    def failures(self, key: str) -> int:
        with self._lock:
            entry = self._keys.get(key)
            return entry.failures if entry else 0

    # --- internals -------------------------------------------------------------------------------
    def _admit(self, key: str, entry: _Entry | None, now: float) -> None:
        if entry is None:
            entry = self._keys[key] = _Entry(last=now)
            self._trim(now)
        else:
            self._keys.move_to_end(key)
        entry.running += 1

    def _work_count(self, entry: _Entry | None) -> int:
        """Puzzles to solve: doubling with this key's failures and with the global excess."""
        over = max(entry.failures - self.case_free if entry else 0,
                   (len(self._failures) - self.global_free) / self.global_step, 0)
        return min(self.work.max_count, 2 ** math.ceil(min(over, 30)))

    def _expire(self, now: float) -> None:
        while self._failures and self._failures[0] < now - self.global_window:
            self._failures.popleft()
        while len(self._failures) > 10 * max(self.global_free, 1000):
            self._failures.popleft()
        while self._keys:
            key, entry = next(iter(self._keys.items()))
            if entry.running or now - entry.last < self.forget_after or entry.next_allowed > now:
                break
            del self._keys[key]

    def _trim(self, now: float) -> None:
        """Under a flood of distinct keys drop the oldest entries that are not throttled; only
        when every entry looked at is throttled does the oldest go (the global delay holds)."""
        tries = min(len(self._keys), 1000)
        while len(self._keys) > self.max_keys and tries > 0:
            tries -= 1
            key, entry = next(iter(self._keys.items()))
            if entry.running or entry.next_allowed > now:
                self._keys.move_to_end(key)
                continue
            del self._keys[key]
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


class RateLimit:
    """Work anyone may ask for without a key (registering a case costs one Argon2id hash and a
    row): a token bucket of `burst` at once, then `per_minute`. Past it a request may wait, or
    solve a challenge whose size doubles with each `step` requests refused in the last minute:
    one client cannot stop everyone, and a flood costs its sender work for every row."""

    SCOPE = "rate-limit"

    def __init__(self, per_minute: float = 30.0, burst: int = 30, step: int = 30, work_bits: int = 12,
                 work_max_count: int = 128, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.step = max(1, step)
        self.clock = clock
        self.work = Work(bits=work_bits, max_count=work_max_count, clock=clock)
        self._tokens = float(burst)
        self._at = clock()
        self._refused: deque[float] = deque()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "RateLimit":
        extra = getattr(settings, "extra", {}) or {}
        return cls(per_minute=float(extra.get("throttle_create_per_minute", 30)),
                   burst=int(extra.get("throttle_create_burst", 30)),
                   work_bits=int(extra.get("throttle_work_bits", 12)),
                   work_max_count=int(extra.get("throttle_work_max_count", 128)))

    def take(self, solution: str | None = None) -> Verdict:
        with self._lock:
            now = self.clock()
            if self.work.redeem(self.SCOPE, solution, now):
                return Verdict(0.0)
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return Verdict(0.0)
            while self._refused and self._refused[0] < now - 60:
                self._refused.popleft()
            if len(self._refused) < 100_000:
                self._refused.append(now)
            wait = (1 - self._tokens) / self.rate if self.rate > 0 else 3600.0
            count = 2 ** min(16, len(self._refused) // self.step)
            return Verdict(wait, self.work.challenge(self.SCOPE, count, now))
