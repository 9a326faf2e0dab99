"""A domain's patrol settings: the instance defaults (store/config.py), the Domain columns that
override them, and their cleaning from text (CSV cells, form fields)."""
from __future__ import annotations

import re

from store.models import Domain


def setting(settings, name: str):
    """A patrol setting (store/config.py: KESU_PATROL_* or config.toml)."""
    return getattr(settings, name)


# --- the domain's patrol settings ----------------------------------------------------------

PATROL_FIELDS = ("patrol_seeds", "patrol_every_s", "patrol_pages", "patrol_bytes", "patrol_pages_day",
                 "patrol_next", "patrol_gate", "patrol_cookie")

# CSV header names (backoffice.domains folds case, spaces, underscores and hyphens away).
CSV_ALIASES = {
    "patrolseeds": "patrol_seeds", "seeds": "patrol_seeds", "seedurls": "patrol_seeds", "巡回url": "patrol_seeds",
    "巡回開始url": "patrol_seeds", "シードurl": "patrol_seeds",
    "patrolevery": "patrol_every_s", "patroleverys": "patrol_every_s", "patrolfrequency": "patrol_every_s",
    "patrolhours": "patrol_every_s", "巡回間隔": "patrol_every_s",
    "patrolpages": "patrol_pages", "巡回ページ数": "patrol_pages",
    "patrolbytes": "patrol_bytes", "patrolmb": "patrol_bytes", "巡回バイト数": "patrol_bytes",
    "patrolpagesday": "patrol_pages_day", "patrolpagesperday": "patrol_pages_day", "1日のページ数": "patrol_pages_day",
    "patrolnext": "patrol_next", "nextselector": "patrol_next", "次ページセレクタ": "patrol_next",
    "patrolgate": "patrol_gate", "gateselector": "patrol_gate", "年齢確認セレクタ": "patrol_gate",
    "patrolcookie": "patrol_cookie", "gatecookie": "patrol_cookie", "cookie": "patrol_cookie",
}


def _duration(text: str) -> int:
    """'86400', '24h', '90m', '2d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise ValueError(f"not a duration: {text!r} (seconds, or a number with s, m, h or d)")
    n = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if n < 60:
        raise ValueError("a patrol frequency under a minute is not polite")
    return int(n)


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = (m.group(2) or "b")[0]
    return int(float(m.group(1)) * {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[unit])


def clean_patrol(values: dict) -> dict:
    """Validated patrol columns from text (CSV cells, form fields); only the keys present.
    An empty value means NULL (the instance default). Raises ValueError naming the problem."""
    out = {}
    for key in PATROL_FIELDS:
        if key not in values:
            continue
        text = (values.get(key) or "").strip()
        if not text:
            out[key] = None
            continue
        if key == "patrol_seeds":
            seeds = [u for u in re.split(r"[\s|,]+", text) if u]
            for u in seeds:
                if not re.match(r"^https?://[^\s/]+", u, re.I):
                    raise ValueError(f"a seed must be an http(s) URL: {u!r}")
            if len(seeds) > 20:
                raise ValueError("at most 20 seed URLs")
            out[key] = seeds
        elif key == "patrol_every_s":
            out[key] = _duration(text)
        elif key == "patrol_bytes":
            out[key] = _size(text)
        elif key in ("patrol_pages", "patrol_pages_day"):
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"{key} must be a whole number of pages: {text!r}")
            out[key] = int(text)
        elif key == "patrol_cookie":
            pairs = [p.strip() for p in text.split(";") if p.strip()]
            if not all(re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+=[^;,\s]*", p) for p in pairs):
                raise ValueError(f"cookies must be name=value pairs separated by ';': {text!r}")
            out[key] = "; ".join(pairs)[:500]
        else:
            if len(text) > 200:
                raise ValueError(f"{key} longer than 200 characters")
            out[key] = text
    return out


def site_config(settings, d: Domain) -> dict:
    return {
        "seeds": list(d.patrol_seeds or [f"https://{d.domain}/"]),
        "every_s": d.patrol_every_s or setting(settings, "patrol_every_s"),
        "pages": d.patrol_pages or setting(settings, "patrol_pages"),
        "bytes": d.patrol_bytes or setting(settings, "patrol_bytes"),
        "pages_day": d.patrol_pages_day or setting(settings, "patrol_pages_day"),
        "next": d.patrol_next or "", "gate": d.patrol_gate or "", "cookie": d.patrol_cookie or "",
    }
