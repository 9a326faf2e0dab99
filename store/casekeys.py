"""Her keys: whatever is hers opens only through her case key (DESIGN §3, issue 14).

Each case key (in the key store, apart from the database) gives its case a *seal key*: an
X25519 key pair derived from it (`crypto.sealing.derive_keypair`). The public half is in
`cases.seal_key`, so a process that holds no private key (a crawl worker) can seal to it;
the private half exists only while someone holds the case key.

What is sealed to a case:
* a matched capture's data key, once per case it matched (`CaptureKey`); the org-sealed copy
  (`captures.data_key`) is dropped. Evidence blobs are under that data key.
* a matched media's signals, under its capture's data key (`media.case_signals`); the
  org-sealed copy (`media.signals`) is dropped. Media that match nothing keep theirs sealed
  to the org key, so later cases can be matched against them.
* a notice's archive (`notices.archived`, `CASE_SEALED` layout): a data key sealed to the
  case, then the text.

Withdrawal destroys the case key (and deletes the CaptureKey rows): from then on, and from
any backup once the key-store backups older than the withdrawal have expired, nothing of
the above opens, with or without the org key passphrase.
"""
from __future__ import annotations

import json
import logging

from sqlalchemy import select

from crypto import CryptoError, envelope
from crypto.sealing import derive_keypair, seal, unseal

from .models import Capture, CaptureKey, Case, Media

log = logging.getLogger("kesu.casekeys")

_SEAL_CONTEXT = b"case-seal"


def seal_pair(case_key: bytes) -> tuple[bytes, bytes]:
    """(public, private) seal key of a case, from its case key."""
    return derive_keypair(case_key, _SEAL_CONTEXT)


def set_seal_key(case: Case, case_key: bytes) -> bytes:
    """Record the case's public seal key (take-in and bank import, where the key is made)."""
    case.seal_key = seal_pair(case_key)[0]
    return case.seal_key


def seal_key(instance, case: Case) -> bytes | None:
    """The case's public seal key; derived and recorded now when this process can (a case
    taken in before seal keys existed), else None."""
    if case.seal_key:
        return bytes(case.seal_key)
    if not instance.unlocked:
        return None
    key = instance.keystore.get(case.id, instance.private_keys().private_key)
    return set_seal_key(case, key) if key is not None else None


def case_private(instance, case_id: int) -> bytes | None:
    """The private seal key of a case, or None when its key is gone (withdrawn) or locked."""
    if not instance.unlocked:
        return None
    key = instance.keystore.get(case_id, instance.private_keys().private_key)
    return seal_pair(key)[1] if key is not None else None


# --- capture data keys ---------------------------------------------------------------------

def wrap_capture_key(session, capture: Capture, case_id: int, public: bytes, data_key: bytes) -> None:
    """Seal `data_key` to case `case_id` (once) and drop the capture's org-sealed copy."""
    row = session.execute(select(CaptureKey).where(CaptureKey.capture_id == capture.id,
                                                   CaptureKey.case_id == case_id)).scalars().first()
    if row is None:
        session.add(CaptureKey(capture_id=capture.id, case_id=case_id, sealed=seal(public, data_key)))
    capture.data_key = None


def capture_key(instance, session, capture: Capture) -> bytes | None:
    """A capture's data key through any case it belongs to (or a legacy org-sealed copy)."""
    rows = session.execute(select(CaptureKey.case_id, CaptureKey.sealed)
                           .where(CaptureKey.capture_id == capture.id).order_by(CaptureKey.id)).all()
    for case_id, sealed in rows:
        private = case_private(instance, case_id)
        if private is None:
            continue
        try:
            return unseal(private, bytes(sealed))
        except CryptoError:
            log.warning("capture %s: the key sealed to case %s did not open", capture.id, case_id)
    if capture.data_key:
        return unseal(instance.private_keys().private_key, bytes(capture.data_key))
    return None


# --- media signals -------------------------------------------------------------------------

def signals_aad(media_id: int) -> bytes:
    return f"kesu:media-signals:v1:{media_id}".encode()


def lock_media_signals(media: Media, data_key: bytes, signals: dict) -> None:
    """A matched media's signals under its capture's data key; the org-sealed copy dropped."""
    body = json.dumps(signals, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    media.case_signals = envelope.encrypt(data_key, body, signals_aad(media.id))
    media.signals = None


def media_signals(instance, session, media: Media) -> dict | None:
    """A media's signals, in memory: org-sealed (matched nothing) or under its capture's key."""
    try:
        if media.signals:
            return json.loads(unseal(instance.private_keys().private_key, bytes(media.signals)))
        if media.case_signals:
            key = capture_key(instance, session, session.get(Capture, media.capture_id))
            if key is None:
                return None
            return json.loads(envelope.decrypt(key, bytes(media.case_signals), signals_aad(media.id)))
    except (CryptoError, ValueError):     # a broken row must not stop the caller; name the row, never content
        log.warning("media %s: signals did not open", media.id)
    return None


# --- archives: CASE_SEALED, a 2-byte length, a box with a data key sealed to the case, the bytes --

# Two zero bytes first: the org-sealed layout ("len16" in store.instance.SEALED_COLUMNS) starts
# with the box's length, never 0, so old rows and a key rotation tell the two apart.
CASE_SEALED = b"\x00\x00"


def notice_aad(notice_id: int) -> bytes:
    return f"kesu:notice:v1:{notice_id}".encode()


def seal_to_case(public: bytes, plaintext: bytes, aad: bytes) -> bytes:
    key = envelope.new_key()
    box = seal(public, key)
    return CASE_SEALED + len(box).to_bytes(2, "big") + box + envelope.encrypt(key, plaintext, aad)


def is_case_sealed(value: bytes) -> bool:
    return bytes(value[:2]) == CASE_SEALED


def open_for_case(instance, case_id: int, sealed: bytes, aad: bytes) -> bytes | None:
    """The plaintext, or None when the case's key is gone (withdrawn)."""
    private = case_private(instance, case_id)
    if private is None:
        return None
    sealed = bytes(sealed)[len(CASE_SEALED):]
    size = int.from_bytes(sealed[:2], "big")
    return envelope.decrypt(unseal(private, sealed[2:2 + size]), sealed[2 + size:], aad)


# --- moving rows made before seal keys existed -----------------------------------------------

def rewrap(instance) -> dict:
    """Put under the case keys what was sealed to the org key before seal keys existed:
    matched captures' data keys, matched media's signals, notice archives. Idempotent; needs
    the org key unlocked (`kesu key rewrap`). A capture any of whose cases has no key is left
    as it is (and counted)."""
    from .models import Match, Notice, Takedown
    counts = {"seal_keys": 0, "captures": 0, "media": 0, "notices": 0, "left": 0}
    private = instance.private_keys().private_key
    with instance.session() as s:
        for case in s.execute(select(Case).where(Case.seal_key.is_(None), Case.status != "withdrawn")).scalars():
            if seal_key(instance, case) is not None:
                counts["seal_keys"] += 1
        pairs = s.execute(select(Media.capture_id, Match.media_id, Match.case_id)
                          .join(Match, Match.media_id == Media.id)
                          .join(Case, Case.id == Match.case_id).where(Case.status != "withdrawn")).all()
        by_capture: dict[int, tuple[set, set]] = {}
        for capture_id, media_id, case_id in pairs:
            media_ids, case_ids = by_capture.setdefault(capture_id, (set(), set()))
            media_ids.add(media_id)
            case_ids.add(case_id)
        for capture_id, (media_ids, case_ids) in sorted(by_capture.items()):
            capture = s.get(Capture, capture_id)
            legacy = [m for m in (s.get(Media, i) for i in sorted(media_ids)) if m.signals]
            if not capture.data_key and not legacy:
                continue
            publics = {c: seal_key(instance, s.get(Case, c)) for c in sorted(case_ids)}
            if any(p is None for p in publics.values()):
                counts["left"] += 1
                continue
            data_key = capture_key(instance, s, capture) or envelope.new_key()
            for case_id, public in publics.items():
                wrap_capture_key(s, capture, case_id, public, data_key)
            counts["captures"] += 1
            for media in legacy:
                lock_media_signals(media, data_key, json.loads(unseal(private, bytes(media.signals))))
                counts["media"] += 1
        notices = s.execute(select(Notice, Takedown.case_id).join(Takedown, Takedown.id == Notice.takedown_id)
                            .where(Notice.archived.is_not(None))).all()
        for notice, case_id in notices:
            value = bytes(notice.archived)
            case = s.get(Case, case_id)
            public = seal_key(instance, case) if case is not None else None
            if is_case_sealed(value) or public is None:
                continue
            size = int.from_bytes(value[:2], "big")
            key = unseal(private, value[2:2 + size])
            aad = notice_aad(notice.id)
            notice.archived = seal_to_case(public, envelope.decrypt(key, value[2 + size:], aad), aad)
            counts["notices"] += 1
    return counts
