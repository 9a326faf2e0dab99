"""Guessing is slowed, per case and globally; never locked out.

State lives in this process's memory (the intake is one waitress process), keyed by the
HMAC of the case number, never the number itself, and never in Redis. After `case_free`
wrong passphrases for one case number each further try must wait a delay that doubles per
failure up to `case_cap` seconds; when more than `global_free` wrong passphrases arrive
within `global_window` seconds, every look-up waits a delay that grows with the excess up
to `global_cap`. A waiting request is answered 429 with Retry-After before any Argon2id
work. Because every delay is capped, the right passphrase always works again after at
most a cap's wait: an attacker can slow a victim down, never shut her out. One look-up
per case number runs at a time, so parallel guesses cannot slip past the delay.
"""
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass
class _Entry:
    failures: int = 0
    next_allowed: float = 0.0
    last: float = 0.0
    busy: bool = False


class Throttle:
    def __init__(self, case_free: int = 5, case_base: float = 1.0, case_cap: float = 300.0,
                 global_free: int = 60, global_window: float = 60.0, global_base: float = 0.5,
                 global_step: float = 20.0, global_cap: float = 30.0, forget_after: float = 86400.0,
                 max_keys: int = 200_000, clock=time.monotonic):
        self.case_free, self.case_base, self.case_cap = case_free, case_base, case_cap
        self.global_free, self.global_window = global_free, global_window
        self.global_base, self.global_step, self.global_cap = global_base, global_step, global_cap
        self.forget_after, self.max_keys = forget_after, max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, _Entry] = OrderedDict()
        self._failures: deque[float] = deque()
        self._global_next = 0.0

    @classmethod
    def from_settings(cls, settings) -> "Throttle":
        """Tuning from the instance config (config.toml keys `throttle_*`); defaults otherwise."""
        extra = getattr(settings, "extra", {}) or {}
        names = ("case_free", "case_base", "case_cap", "global_free", "global_window", "global_base",
                 "global_step", "global_cap")
        kwargs = {n: float(extra["throttle_" + n]) for n in names if "throttle_" + n in extra}
        for n in ("case_free", "global_free"):
            if n in kwargs:
                kwargs[n] = int(kwargs[n])
        return cls(**kwargs)

    # --- the two calls around one look-up ---------------------------------------------------
    def begin(self, key: str) -> float:
        """0 when the look-up may run now (and is then marked running), else seconds to wait."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = _Entry(last=now)
                self._trim()
            else:
                self._keys.move_to_end(key)
            wait = max(entry.next_allowed - now, self._global_next - now, 0.0)
            if wait > 0:
                return wait
            if entry.busy:
                return 1.0
            entry.busy = True
            return 0.0

    def end(self, key: str, ok: bool) -> None:
        with self._lock:
            now = self.clock()
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = _Entry()
            entry.busy = False
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

    # --- housekeeping --------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        while self._failures and self._failures[0] < now - self.global_window:
            self._failures.popleft()
        while len(self._failures) > 10 * max(self.global_free, 1000):
            self._failures.popleft()
        while self._keys:
            key, entry = next(iter(self._keys.items()))
            if entry.busy or now - entry.last < self.forget_after or entry.next_allowed > now:
                break
            del self._keys[key]

    def _trim(self) -> None:
        # Under a flood of distinct numbers keep the newest entries; the global delay still holds.
        tries = len(self._keys)
        while len(self._keys) > self.max_keys and tries > 0:
            tries -= 1
            key, entry = next(iter(self._keys.items()))
            if entry.busy:
                self._keys.move_to_end(key)
                continue
            del self._keys[key]


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


class RateLimit:
    """A token bucket for work anyone may ask for without a case (registering a case costs one
    Argon2id hash and a row): `burst` at once, then `per_minute`. Process memory, no keys."""

    def __init__(self, per_minute: float = 30.0, burst: int = 30, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "RateLimit":
        extra = getattr(settings, "extra", {}) or {}
        return cls(per_minute=float(extra.get("throttle_create_per_minute", 30)),
                   burst=int(extra.get("throttle_create_burst", 30)))

    def take(self) -> float:
        """0 when allowed (a token is spent), else seconds until the next token."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate if self.rate > 0 else 3600.0
