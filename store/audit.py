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


# --- the head, signed and kept outside the database ----------------------------------------------
# Whoever can drop the triggers can cut the chain's end and leave a chain that still verifies.
# So the last entry (id and hash), signed with the org signing key, goes where the database's
# writer cannot reach: into every backup and every evidence export. A chain that no longer
# holds an anchored entry with its hash was cut or altered after that anchor was taken.

def head(session) -> dict:
    """The last entry: {"id", "hash"} (id 0 and the genesis hash for an empty log)."""
    last = session.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    return {"id": last[0], "hash": last[1]} if last else {"id": 0, "hash": GENESIS}


def signed_head(session, keys) -> dict:
    """The head signed with the org signing key (`keys`: crypto.keys.OrgKeys)."""
    from crypto.sealing import b64
    from crypto.signing import sign
    doc = {"kesu_audit_head": 1, **head(session), "signed_at": utcnow().isoformat(timespec="seconds") + "Z",
           "key_id": keys.key_id, "verify_key": b64(keys.verify_key)}
    return {**doc, "signature": sign(keys.signing_key, doc)}


def check_anchor(session, anchor: dict, verify_keys=None, signed: bool = True) -> list[str]:
    """What is wrong between this database's chain and an anchor taken earlier: its signature
    (by one of `verify_keys` when given; not for an unsigned head), the chain itself, and the
    anchored entry still there."""
    problems = _signature_problems(anchor, verify_keys) if signed else []
    broken = verify(session)
    if broken is not None:
        problems.append(f"the audit chain is broken at entry {broken}")
    at = anchor.get("id", 0)
    if at:
        found = session.execute(select(AuditEntry.hash).where(AuditEntry.id == at)).scalar()
        if found is None:
            problems.append(f"the audit log ends before entry {at}, which an anchor signed "
                            f"{anchor.get('signed_at', '?')} records: its end was cut")
        elif found != anchor.get("hash"):
            problems.append(f"audit entry {at} differs from the one anchored {anchor.get('signed_at', '?')}")
    return problems


def _signature_problems(anchor: dict, verify_keys) -> list[str]:
    from crypto import CryptoError
    from crypto.sealing import unb64
    from crypto.signing import verify as verify_signature
    try:
        key = unb64(anchor["verify_key"])
        verify_signature(key, {k: v for k, v in anchor.items() if k != "signature"}, anchor["signature"])
    except (CryptoError, KeyError, TypeError, ValueError):
        return ["the audit anchor's signature does not verify"]
    if verify_keys is not None and key not in verify_keys:
        return ["the audit anchor is signed by a key this instance does not hold"]
    return []
