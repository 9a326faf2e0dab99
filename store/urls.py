"""Hosts and sites of URLs, and the domain-database row a URL belongs to: written once."""
from urllib.parse import urlsplit

from sqlalchemy import select

from .models import Domain


def host_of(url: str) -> str:
    """The URL's host name, lower case ("" for a URL that does not parse)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def site_of(url: str) -> str:
    """The site a URL belongs to: its host without a leading "www."."""
    host = host_of(url)
    return host[4:] if host.startswith("www.") else host


def domain_id(session, url: str) -> int | None:
    """The domain database's row for a URL: its host or the nearest parent domain listed."""
    parts = host_of(url).split(".")
    for i in range(len(parts) - 1):
        row = session.execute(select(Domain.id).where(Domain.domain == ".".join(parts[i:]))).scalar()
        if row:
            return row
    return None
