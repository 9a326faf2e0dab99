"""Abuse contacts of a site: RDAP (registrar of the domain, network of its server) and security.txt.

Everything is parsing of responses; the fetching takes an injectable `fetch(url) -> (status, text)`
(tests use stored responses; production uses `fetch_for(settings)`, kesu's one outbound fetcher). Results land in Domain.contacts:
  {"site": {"emails": [...], "forms": [...], "source": "security.txt"},
   "registrar": {"name", "email", "source": "rdap"},
   "host": {"name", "email", "network", "source": "rdap"}}
"""
import json
import logging
import re
import socket
from collections.abc import Callable
from datetime import datetime, timezone

from workers.net.fetch import Fetcher

log = logging.getLogger("kesu.contacts")

RDAP_DOMAIN = "https://rdap.org/domain/{domain}"
RDAP_IP = "https://rdap.org/ip/{ip}"
Fetch = Callable[[str], tuple[int, str]]


# --- RDAP (RFC 9083) ------------------------------------------------------------------------------

def _vcard(entity: dict) -> dict:
    out = {"name": "", "emails": []}
    arr = entity.get("vcardArray")
    if not (isinstance(arr, list) and len(arr) == 2 and isinstance(arr[1], list)):
        return out
    for prop in arr[1]:
        if not (isinstance(prop, list) and len(prop) >= 4):
            continue
        name, value = prop[0], prop[3]
        if name == "fn" and isinstance(value, str) and not out["name"]:
            out["name"] = value.strip()
        elif name == "org" and isinstance(value, str) and not out["name"]:
            out["name"] = value.strip()
        elif name == "email" and isinstance(value, str):
            out["emails"].append(value.strip().lower())
    return out


def _entities(obj: dict):
    """Every entity, nested ones included, with its roles."""
    for ent in obj.get("entities", []) or []:
        if isinstance(ent, dict):
            yield ent
            yield from _entities(ent)


def rdap_abuse(rdap: dict) -> dict:
    """{"name", "email"}: the abuse contact (role abuse, nested under registrar or registrant too),
    named after the registrar (domain RDAP) or the network's registrant/name (IP RDAP)."""
    abuse_emails, owner = [], ""
    for ent in _entities(rdap):
        roles = set(ent.get("roles") or [])
        card = _vcard(ent)
        if "abuse" in roles:
            abuse_emails += card["emails"]
        if not owner and roles & {"registrar", "registrant"} and card["name"]:
            owner = card["name"]
    if not owner:
        owner = rdap.get("name", "") or ""
    return {"name": owner, "email": abuse_emails[0] if abuse_emails else "",
            "network": rdap.get("handle", "") if rdap.get("objectClassName") == "ip network" else ""}


# --- security.txt (RFC 9116) ----------------------------------------------------------------------

def parse_security_txt(text: str, now: datetime | None = None) -> dict:
    """{"emails", "forms", "languages", "expired", "policy"} from a security.txt body (signed or not)."""
    now = now or datetime.now(timezone.utc)
    emails, forms, languages, policy, expired = [], [], [], [], False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("-----") or ":" not in line:
            continue
        field, value = (p.strip() for p in line.split(":", 1))
        field = field.lower()
        if field == "contact":
            if value.lower().startswith("mailto:"):
                emails.append(value[7:].split("?", 1)[0].strip().lower())
            elif re.match(r"https?://", value, re.I):
                forms.append(value)
        elif field == "expires":
            try:
                expired = datetime.fromisoformat(value.replace("Z", "+00:00")) < now
            except ValueError:
                expired = False
        elif field == "preferred-languages":
            languages = [v.strip() for v in value.split(",") if v.strip()]
        elif field == "policy":
            policy.append(value)
    return {"emails": emails, "forms": forms, "languages": languages, "policy": policy, "expired": expired}


# --- fetching with an injectable fetcher ----------------------------------------------------------

def http_fetch(url: str, timeout: float = 20.0, fetcher: Fetcher | None = None) -> tuple[int, str]:
    """One lookup through kesu's outbound fetcher (the address guard on every hop, the crawl proxy)."""
    fetcher = fetcher or Fetcher(timeout=timeout, user_agent="kesu-contacts/1")
    resp = fetcher.get(url, headers={"Accept": "application/rdap+json, text/plain, */*"}, max_bytes=512 * 1024)
    return resp.status, resp.body.decode("utf-8", "replace")


def fetch_for(settings) -> Fetch:
    """The production fetcher for an instance's settings (allow_private, crawl_proxy)."""
    fetcher = Fetcher.from_settings(settings, timeout=20.0, user_agent="kesu-contacts/1")
    return lambda url: http_fetch(url, fetcher=fetcher)


def find_contacts(domain: str, fetch: Fetch = http_fetch, resolve: Callable[[str], str] = socket.gethostbyname) -> dict:
    """Contacts for one domain; a lookup that fails leaves its part out, never the whole."""
    out: dict = {}
    for path in ("/.well-known/security.txt", "/security.txt"):
        try:
            status, text = fetch(f"https://{domain}{path}")
        except Exception as exc:
            log.info("security.txt of %s: %s", domain, exc.__class__.__name__)
            break
        if status == 200 and "contact:" in text.lower():
            parsed = parse_security_txt(text)
            if parsed["emails"] or parsed["forms"]:
                out["site"] = {"emails": parsed["emails"], "forms": parsed["forms"], "source": "security.txt",
                               "expired": parsed["expired"], "languages": parsed["languages"]}
            break
    try:
        status, text = fetch(RDAP_DOMAIN.format(domain=domain))
        if status == 200:
            found = rdap_abuse(json.loads(text))
            out["registrar"] = {"name": found["name"], "email": found["email"], "source": "rdap"}
    except Exception as exc:
        log.info("RDAP of %s: %s", domain, exc.__class__.__name__)
    try:
        ip = resolve(domain)
        status, text = fetch(RDAP_IP.format(ip=ip))
        if status == 200:
            found = rdap_abuse(json.loads(text))
            out["host"] = {"name": found["name"], "email": found["email"], "network": found["network"],
                           "ip": ip, "source": "rdap"}
    except Exception as exc:
        log.info("IP RDAP of %s: %s", domain, exc.__class__.__name__)
    return out


def refresh(instance, domain_id: int, fetch: Fetch | None = None, resolve=socket.gethostbyname) -> dict:
    """Look up and store one domain's contacts (keeps earlier parts a new lookup could not find)."""
    from store.models import Domain, utcnow
    with instance.session() as s:
        name = s.get(Domain, domain_id).domain
    found = find_contacts(name, fetch or fetch_for(instance.settings), resolve)
    with instance.session() as s:
        d = s.get(Domain, domain_id)
        merged = dict(d.contacts or {})
        merged.update(found)
        merged["checked"] = utcnow().isoformat(timespec="seconds")
        d.contacts = merged
        return merged


def refresh_job(ref: str) -> dict:
    """RQ job: look up one domain's contacts (ref = domain id)."""
    from workers.system.context import instance as current
    return refresh(current(), int(ref))
