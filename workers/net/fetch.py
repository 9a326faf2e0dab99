"""One outbound fetcher for every request kesu makes outside the browser: re-checks, contact
lookups (RDAP, security.txt), the patrol's robots.txt and change probes.

Each request goes through the address guard (workers.net.guard), like the browser's: the
name is resolved by the guard, every address checked, the connection made to a checked
address, through the crawl proxy when one is configured. Redirects are followed here, one
hop at a time, each hop a new request through the guard, so a redirect to a private address
is refused like a first request to it.

    fetcher = Fetcher.from_settings(instance.settings)
    r = fetcher.get(url, headers={...}, max_bytes=..., follow_redirects=True)
    r.status, r.headers, r.body, r.final_url, r.truncated, r.redirects
    # raises Refused (the address policy said no) or FetchError (no answer: DNS, refused
    # connection, timeout, TLS); an HTTP error status is a Response, never an exception.
"""
from __future__ import annotations

import http.client
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from workers.net.addresses import resolve
from workers.net.guard import REFUSED_REASON, Guard

USER_AGENT = "kesu/1 (+takedown follow-up)"
TOTAL_TIMEOUTS = 4                   # a whole request may take this many `timeout`s (each read: one)
REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """No answer (DNS, refused connection, timeout, TLS, refused address): nothing can be concluded."""


class Refused(FetchError):
    """The address policy refused the host (or a redirect's host)."""


@dataclass
class Response:
    status: int
    body: bytes
    final_url: str = ""
    truncated: bool = False          # the body went past max_bytes: its hash says nothing
    headers: dict = field(default_factory=dict)
    redirects: list = field(default_factory=list)   # [(url, status, location)] followed
    wire_bytes: int = 0              # head + body bytes received (budgets count these)


_guards: dict = {}
_guards_lock = threading.Lock()


def shared_guard(allow_private: bool, upstream: str, resolver=resolve) -> Guard:
    """This process's guard for its own requests (one per setting; a forked child starts its own)."""
    key = (os.getpid(), bool(allow_private), upstream or "", resolver)
    with _guards_lock:
        guard = _guards.get(key)
        if guard is None or not guard.up():
            guard = Guard(allow_private, upstream, resolver, explain_refusals=True).start()
            _guards[key] = guard
        return guard


class Fetcher:
    def __init__(self, allow_private: bool = False, upstream: str = "", timeout: float = 30.0,
                 user_agent: str = USER_AGENT, resolver=resolve):
        self.allow_private = allow_private
        self.upstream = upstream
        self.timeout = timeout
        self.user_agent = user_agent
        self.resolver = resolver

    @classmethod
    def from_settings(cls, settings, **kwargs) -> Fetcher:
        return cls(allow_private=settings.crawl_allow_private, upstream=settings.crawl_proxy, **kwargs)

    def get(self, url: str, headers: dict | None = None, max_bytes: int = 16 * 1024 * 1024,
            follow_redirects: bool = True, max_redirects: int = 10, timeout: float | None = None) -> Response:
        hops: list = []
        while True:
            r = self._once(url, headers or {}, max_bytes, timeout or self.timeout)
            location = next((v for k, v in r.headers.items() if k.lower() == "location"), None)
            if not (follow_redirects and r.status in REDIRECTS and location):
                r.redirects = hops
                return r
            if len(hops) >= max_redirects:
                raise FetchError(f"more than {max_redirects} redirects")
            target = urljoin(url, location)
            hops.append((url, r.status, target))
            url = target

    def _once(self, url: str, headers: dict, max_bytes: int, timeout: float) -> Response:
        deadline = time.monotonic() + TOTAL_TIMEOUTS * timeout     # a server dripping bytes cannot hold a job
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"not an http(s) URL: {parts.scheme or '?'}")
        guard = shared_guard(self.allow_private, self.upstream, self.resolver)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        send = {"User-Agent": self.user_agent, "Accept": "*/*", "Accept-Encoding": "identity", **headers,
                "Connection": "close"}
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection("127.0.0.1", guard.port, timeout=timeout,
                                               context=ssl.create_default_context())
            conn.set_tunnel(host, parts.port or 443)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        else:
            conn = http.client.HTTPConnection("127.0.0.1", guard.port, timeout=timeout)
            target = url.split("#", 1)[0]
        try:
            conn.request("GET", target, headers=send)
            resp = conn.getresponse()
            if resp.getheader("X-Kesu-Guard") == "refused":
                raise Refused(resp.read(2000).decode("utf-8", "replace").removeprefix(REFUSED_REASON + ": "))
            if resp.getheader("X-Kesu-Guard") == "unreachable":
                raise FetchError(resp.read(2000).decode("utf-8", "replace"))
            body = _read_within(resp, max_bytes + 1, deadline)
            head = 15 + sum(len(k) + len(v) + 4 for k, v in resp.getheaders())
            return Response(resp.status, body[:max_bytes], url, truncated=len(body) > max_bytes,
                            headers=dict(resp.getheaders()), wire_bytes=head + len(body))
        except FetchError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            text = str(exc)
            if REFUSED_REASON in text:
                raise Refused(text.split(REFUSED_REASON + ": ", 1)[-1]) from None
            raise FetchError(f"{type(exc).__name__}: {text[:200]}") from exc
        finally:
            conn.close()


def _read_within(resp, limit: int, deadline: float) -> bytes:
    chunks, size = [], 0
    while size < limit:
        if time.monotonic() > deadline:
            raise FetchError("the body took too long to arrive")
        chunk = resp.read1(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
