"""Cheap looks at a site outside the browser: robots.txt and conditional GETs whose answer (304,
or the same links and media) tells the patrol a page has not changed."""
from __future__ import annotations

import hashlib
import re
import urllib.robotparser
from datetime import datetime
from urllib.parse import urljoin

from store.models import Domain, utcnow
from workers.capture import crawl as cr
from workers.capture.patrol.config import setting
from workers.net.fetch import Fetcher, FetchError, Refused

USER_AGENT_TOKEN = "kesu"               # the name robots.txt rules are read for

# --- page fingerprints ---------------------------------------------------------------------

_ATTR = re.compile(rb"""\b(?:src|href|srcset|data-src|data-original|poster)\s*=\s*["']([^"']{1,2000})["']""", re.I)


def content_hash(html: bytes | None) -> str | None:
    """What matters of a listing: the links and media it names (not timestamps or tokens)."""
    if html is None:
        return None
    found = sorted(set(_ATTR.findall(html)))
    return hashlib.sha256(b"\n".join(found) if found else html).hexdigest()


def url_key(url: str) -> str:
    return hashlib.sha256(cr.normalise(url).encode("utf-8")).hexdigest()


def header(headers: dict, name: str) -> str | None:
    return next((v for k, v in (headers or {}).items() if k.lower() == name), None)


# --- plain requests (robots.txt, conditional probes) ------------------------------------------

def fetch(settings, url: str, headers: dict, timeout: float, limit: int) -> dict:
    """One GET outside the browser through kesu's one outbound fetcher (the address guard, the
    crawl proxy): {"status", "headers", "body", "bytes", "error"}. Never raises. A redirect
    answers as itself ("changed": the browser follows it)."""
    out = {"status": None, "headers": {}, "body": None, "bytes": 0, "error": None}
    try:
        got = Fetcher.from_settings(settings).get(url, headers=headers, max_bytes=limit, follow_redirects=False,
                                                  timeout=max(0.5, timeout))
    except Refused as exc:
        out["error"] = f"refused: {exc}"
        return out
    except FetchError as exc:            # timeouts, refused connections, TLS errors
        out["error"] = str(exc)[:240]
        return out
    out.update(status=got.status, headers=got.headers, body=got.body, bytes=got.wire_bytes)
    return out


def read_robots(instance, d_id: int, cfg: dict, remaining: float, ua: str) -> tuple[dict, urllib.robotparser.RobotFileParser | None, dict]:
    """The recorded robots.txt of the domain (fetched again when older than the TTL) and a parser."""
    settings = instance.settings
    with instance.session() as s:
        recorded = dict(s.get(Domain, d_id).patrol_robots or {})
    cost = {"fetched": 0, "bytes": 0, "error": None}
    fresh = recorded.get("fetched_at") and (
        utcnow() - datetime.fromisoformat(recorded["fetched_at"])).total_seconds() < setting(settings, "patrol_robots_ttl")
    if not fresh:
        seed = cfg["seeds"][0]
        url = urljoin(seed, "/robots.txt")
        got = fetch(settings, url, {"User-Agent": ua}, timeout=min(10.0, max(0.5, remaining)), limit=512 * 1024)
        cost["bytes"] = got["bytes"]
        cost["fetched"] = 1 if got["body"] is not None else 0
        if got["error"] and got["status"] is None:
            cost["error"] = got["error"]
            return recorded, None, cost
        text = (got["body"] or b"").decode("utf-8", "replace") if got["status"] == 200 else ""
        recorded = {"url": url, "fetched_at": utcnow().isoformat(timespec="seconds"), "status": got["status"],
                    "sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text[:8000]}
        with instance.session() as s:
            s.get(Domain, d_id).patrol_robots = recorded
    parser = urllib.robotparser.RobotFileParser()
    status = recorded.get("status")
    if status in (401, 403):
        parser.disallow_all = True
    else:
        parser.parse((recorded.get("text") or "").splitlines())
    return recorded, parser, cost


def parser_disallows_all(robots: dict) -> bool:
    p = urllib.robotparser.RobotFileParser()
    p.parse((robots.get("text") or "").splitlines())
    seed = robots.get("url") or "http://x/robots.txt"
    return not p.can_fetch(USER_AGENT_TOKEN, urljoin(seed, "/"))
