"""The one place a case's secrets are opened: her signals, details and item labels.

Everything here runs only where the org key is unlocked (take-in, matcher, back office) and
keeps what it returns in memory; nothing is logged.
"""
import json

from sqlalchemy import select

from crypto import envelope
from store.cases import details_aad, label_aad, signal_aad
from store.models import Case, Item, Signal


def case_key(instance, case_id: int) -> bytes | None:
    """Her case key from the key store (None once withdrawn: crypto-shredded)."""
    return instance.keystore.get(case_id, instance.private_keys().private_key)


def case_signals(instance, case_id: int) -> list[dict]:
    """Every signal of a case, decrypted (for the matcher and the back office, in memory only)."""
    key = case_key(instance, case_id)
    if key is None:
        return []
    with instance.session() as s:
        rows = s.execute(select(Signal).where(Signal.case_id == case_id).order_by(Signal.id)).scalars().all()
        return [json.loads(envelope.decrypt(key, r.ciphertext, signal_aad(case_id, r.item, r.type))) for r in rows]


def case_details(instance, case_id: int) -> dict | None:
    """Her details (known URLs, contact, consents); None when none or the key is gone."""
    key = case_key(instance, case_id)
    with instance.session() as s:
        case = s.get(Case, case_id)
        if key is None or case is None or case.details is None:
            return None
        return json.loads(envelope.decrypt(key, case.details, details_aad(case_id)))


def item_labels(instance, case_id: int) -> dict[str, str]:
    """The labels she gave her items, by item id."""
    key = case_key(instance, case_id)
    if key is None:
        return {}
    with instance.session() as s:
        rows = s.execute(select(Item).where(Item.case_id == case_id)).scalars().all()
        return {r.item: envelope.decrypt(key, r.label, label_aad(case_id, r.item)).decode("utf-8")
                for r in rows if r.label is not None}
