"""The append-only, hash-chained audit log: who opened, decrypted, exported what.

Entries name internal ids and actions, never content. Each entry's hash covers the
previous hash, so a removed or altered entry breaks the chain (verify() finds it);
the database refuses UPDATE and DELETE on the table (triggers in the migration).
"""
import hashlib
import json

from sqlalchemy import select, text

from .models import AuditEntry, utcnow

GENESIS = "0" * 64
_CHAIN_LOCK = 0x6B657375          # PostgreSQL advisory lock key for appending to the chain


def _digest(prev_hash: str, at, actor: str, action: str, target: str, detail: dict) -> str:
    body = json.dumps([prev_hash, at.isoformat(timespec="microseconds"), actor, action, target, detail],
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _take_turn(session) -> None:
    """Appends take turns until their transaction ends: two writers reading the same last
    hash (intake, back office and workers write at once) would fork the chain."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    elif dialect == "sqlite":   # a write that deletes nothing takes the database's write lock
        session.execute(text("DELETE FROM audit_log WHERE 0"))


def record(session, actor: str, action: str, target: str = "", **detail) -> AuditEntry:
    _take_turn(session)
    last = session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).scalar()
    prev = last or GENESIS
    at = utcnow()
    entry = AuditEntry(at=at, actor=actor, action=action, target=str(target), detail=detail,
                       prev_hash=prev, hash=_digest(prev, at, actor, action, str(target), detail))
    session.add(entry)
    session.flush()
    return entry


def verify(session) -> int | None:
    """Id of the first broken entry, or None when the whole chain holds."""
    prev = GENESIS
    for e in session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars():
        if e.prev_hash != prev or e.hash != _digest(prev, e.at, e.actor, e.action, e.target, e.detail):
            return e.id
        prev = e.hash
    return None
