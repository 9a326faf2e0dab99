"""The address policy: which addresses kesu may connect to when it fetches from the web.

Only globally reachable unicast addresses. Everything else is refused: loopback, private
(RFC 1918, ULA), shared address space (CGNAT, 100.64.0.0/10), link-local (cloud metadata at
169.254.169.254), multicast, reserved, documentation and benchmarking ranges, and IPv6
addresses that embed an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4
2002::/16, Teredo) unless the embedded address is itself allowed. The stdlib `ipaddress`
properties do most of it; the explicit nets cover what Python 3.11's `is_global` misses.

`KESU_CRAWL_ALLOW_PRIVATE=1` (settings.crawl_allow_private) lifts the policy: tests serve
their sites on loopback. Production never sets it.
"""
from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REFUSED_NETS = [ipaddress.ip_network(n) for n in (
    # IPv4 (IANA special-purpose registry)
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    # IPv6
    "::/128", "::1/128", "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


class Refused(Exception):
    """A connection the address policy does not allow (the reason says why, without the address's owner)."""


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4, Teredo client), if any."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64 or (addr in _COMPATIBLE and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    return None


def refusal(ip: str | IPAddress) -> str | None:
    """Why this address is refused, or None when kesu may connect to it."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0].strip("[]") if isinstance(ip, str) else ip)
    except ValueError:
        return "not an IP address"
    if isinstance(addr, ipaddress.IPv6Address):
        inner = embedded_ipv4(addr)
        if inner is not None:
            why = refusal(inner)
            return f"embeds a refused IPv4 address ({why})" if why else None
    if addr.is_loopback:
        return "loopback address"
    if addr.is_multicast:
        return "multicast address"
    if addr.is_link_local:
        return "link-local address"
    if addr in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (carrier-grade NAT) address"
    if addr.is_private or addr.is_reserved or addr.is_unspecified or not addr.is_global \
            or any(addr in net for net in _REFUSED_NETS if net.version == addr.version):
        return "private, reserved or special-purpose address"
    return None


def resolve(host: str) -> list[str]:
    """Every address a name resolves to (an IP literal resolves to itself); [] when none."""
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    out: list[str] = []
    for info in infos:
        ip = info[4][0]
        if ip not in out:
            out.append(ip)
    return out


def checked_addresses(host: str, allow_private: bool, resolver=resolve) -> list[str]:
    """Resolve `host` and return its addresses when EVERY one is allowed (a name that also points
    at a private address is refused whole: which one a client picks is not ours to guess)."""
    if not host:
        raise Refused("no host")
    ips = resolver(host.strip("[]"))
    if not ips:
        raise Refused(f"{host} does not resolve")
    if not allow_private:
        for ip in ips:
            why = refusal(ip)
            if why:
                raise Refused(f"refused: {host} resolves to a {why}")
    return list(ips)


def url_refusal(url: str, allow_private: bool, resolver=resolve) -> str | None:
    """Why kesu may not fetch this URL (scheme, host, addresses), or None."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '?'} not fetched"
    try:
        checked_addresses(parts.hostname or "", allow_private, resolver)
    except Refused as exc:
        return str(exc)
    return None
