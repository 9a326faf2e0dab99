"""Case operations on the ciphertext side: what the public intake may do.

Nothing here opens a sealed box or a case key. A case number is random (12 digits) and is
stored only as HMAC(pepper, number); the passphrase only as Argon2id(HMAC(pepper, it)).
`authenticate` costs exactly one Argon2id verification whether or not the case exists, and
goes through the same statements in both cases, so valid and invalid look-ups look and
take the same (bench/bench_case_timing.py measures it).

The associated-data strings that bind each ciphertext to its case, item and type live
here too, so the worker that writes them (workers/takein.py) and the staff side that reads
them agree on one definition.
"""
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from crypto import envelope, passphrases

from .models import Case, Item, Signal, Submission, Takedown, today
from .vocabulary import CASE_NOT_YET_FOUND, REMOVED_STATUSES, REQUESTED_STATUSES

log = logging.getLogger("kesu.cases")

CASE_DIGITS = 12
_NOT_DIGIT = re.compile(r"\D+")


# Called as hook(instance, case_id) after a case was withdrawn (its rows and key are gone).
# The matcher registers here (or the intake enqueues its job), see `on_withdraw`.
WITHDRAW_HOOKS: list[Callable] = []


def on_withdraw(hook: Callable) -> Callable:
    WITHDRAW_HOOKS.append(hook)
    return hook


# --- associated data: binds every ciphertext to its place --------------------------------

def signal_aad(case_id: int, item: str, type_: str) -> bytes:
    return f"kesu:signal:v1:{case_id}:{item}:{type_}".encode()


def label_aad(case_id: int, item: str) -> bytes:
    return f"kesu:item-label:v1:{case_id}:{item}".encode()


def details_aad(case_id: int) -> bytes:
    return f"kesu:case-details:v1:{case_id}".encode()


# --- case numbers ---------------------------------------------------------------------------

def new_case_number() -> str:
    """12 random digits, never starting with 0 (so no spreadsheet or phone drops it)."""
    return str(10 ** (CASE_DIGITS - 1) + secrets.randbelow(9 * 10 ** (CASE_DIGITS - 1)))


def normalize_number(text: str) -> str:
    """NFKC (full-width digits from a Japanese keyboard) and every separator dropped."""
    return _NOT_DIGIT.sub("", unicodedata.normalize("NFKC", text or ""))


def number_key(pepper: bytes, number: str) -> str:
    """HMAC of the normalised case number: the only form the database (or a throttle) holds."""
    return envelope.keyed_name(pepper, b"case-number:" + normalize_number(number).encode("ascii"))


# --- operations -----------------------------------------------------------------------------

def create_case(instance, key_id: str, sealed: bytes, language: str = "en") -> tuple[str, str, int, int]:
    """A new case holding one sealed submission: (case_number, passphrase, case_id, submission_id).
    The passphrase is in `language` (the language of the page she registered on)."""
    passphrase = passphrases.generate(language)
    stored = passphrases.hash_secret(instance.pepper, passphrases.normalize(passphrase))
    for _ in range(5):
        number = new_case_number()
        try:
            with instance.session() as s:
                case = Case(number_hash=number_key(instance.pepper, number), passphrase_hash=stored,
                            status="received")
                s.add(case)
                s.flush()
                sub = Submission(case_id=case.id, key_id=key_id, sealed=sealed)
                s.add(sub)
                s.flush()
                return number, passphrase, case.id, sub.id
        except IntegrityError:      # the same random number twice: draw again
            continue
    raise RuntimeError("could not draw a free case number")


def authenticate(instance, number: str, passphrase: str) -> int | None:
    """The case id when number and passphrase match, else None. One Argon2id either way."""
    with instance.session() as s:
        row = s.execute(select(Case.id, Case.passphrase_hash)
                        .where(Case.number_hash == number_key(instance.pepper, number))).first()
    case_id, stored = (row[0], row[1]) if row else (None, None)
    ok = passphrases.verify_secret(instance.pepper, stored, passphrases.normalize(passphrase or ""))
    return case_id if ok else None


def add_submission(instance, case_id: int, key_id: str, sealed: bytes) -> int:
    with instance.session() as s:
        sub = Submission(case_id=case_id, key_id=key_id, sealed=sealed)
        s.add(sub)
        case = s.get(Case, case_id)
        if case is not None:
            case.updated_on = today()
        s.flush()
        return sub.id


def status(instance, case_id: int) -> dict | None:
    """What the victim sees: §6.3 status plus the items she can withdraw one by one."""
    with instance.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            return None
        counts = dict(s.execute(select(Takedown.status, func.count()).where(Takedown.case_id == case_id)
                                .group_by(Takedown.status)).all())
        items = s.execute(select(Item.item, Item.kind).where(Item.case_id == case_id).order_by(Item.id)).all()
        pending = s.execute(select(func.count()).select_from(Submission)
                            .where(Submission.case_id == case_id)).scalar()
        return {
            "status": case.status,
            "found": sum(counts.values()),
            "requested": sum(counts.get(k, 0) for k in REQUESTED_STATUSES),
            "removed": sum(counts.get(k, 0) for k in REMOVED_STATUSES),
            "updated": case.updated_on.isoformat(),
            "items": [{"item": i, "kind": k} for i, k in items],
            "pending": int(pending or 0),
        }


def live_cases(session, case_ids) -> set[int]:
    """Those of `case_ids` that exist and are not withdrawn (what a match may be recorded for)."""
    if not case_ids:
        return set()
    return set(session.execute(select(Case.id).where(Case.id.in_(set(case_ids)),
                                                     Case.status != "withdrawn")).scalars())


def mark_found(session, case_id: int) -> bool:
    """The one way a case becomes "found": only from CASE_NOT_YET_FOUND (a case already
    requested or removed keeps its status). True when it moved."""
    case = session.get(Case, case_id)
    if case is None or case.status not in CASE_NOT_YET_FOUND:
        return False
    case.status = "found"
    return True


def delete_item(instance, case_id: int, item: str) -> bool:
    """Destroy one item's signals; False when the case has no such item."""
    with instance.session() as s:
        found = s.execute(select(Item).where(Item.case_id == case_id, Item.item == item)).scalars().first()
        if found is None:
            return False
        s.execute(delete(Signal).where(Signal.case_id == case_id, Signal.item == item))
        s.delete(found)
        case = s.get(Case, case_id)
        if case is not None:
            case.updated_on = today()
    return True


def withdraw(instance, case_id: int) -> None:
    """Everything of the case: rows (signals, items, submissions, matches, takedowns), its key
    in the key store, evidence blobs no other case needs. An audit entry keeps the internal id."""
    from . import audit
    from .models import CaptureKey, Match
    blobs = _captures_only_for(instance, case_id)
    from .tally import tally
    # The key goes first: should the transaction below fail, the rows left are already noise,
    # and she can withdraw again (her passphrase still opens the case).
    instance.keystore.destroy(case_id)
    with instance.session() as s:
        tally(s, case_id)      # the yearly statistics keep their counts, nothing else
        for model in (Signal, Item, Submission, Match, CaptureKey, Takedown):
            s.execute(delete(model).where(model.case_id == case_id))
        case = s.get(Case, case_id)
        if case is not None:
            s.delete(case)
        audit.record(s, "victim", "case.withdraw", f"case:{case_id}")
    for name in blobs:
        try:
            instance.blobs.delete(name)
        except ValueError:
            pass
    for hook in list(WITHDRAW_HOOKS):
        try:
            hook(instance, case_id)
        except Exception:   # a hook must not undo a withdrawal; it logs no content
            log.exception("withdraw hook %s failed", getattr(hook, "__name__", hook))


def _captures_only_for(instance, case_id: int) -> list[str]:
    """Delete captures whose matches all belong to this case; return their blob names."""
    from .models import Capture, Match, Media
    names: list[str] = []
    with instance.session() as s:
        mine = set(s.execute(select(Media.capture_id).join(Match, Match.media_id == Media.id)
                             .where(Match.case_id == case_id)).scalars())
        if not mine:
            return names
        shared = set(s.execute(select(Media.capture_id).join(Match, Match.media_id == Media.id)
                               .where(Match.case_id != case_id, Media.capture_id.in_(mine))).scalars())
        for capture in s.execute(select(Capture).where(Capture.id.in_(mine - shared))).scalars():
            for artifact in (capture.evidence or {}).get("artifacts", {}).values():
                names.append(artifact["blob"])
            for media in capture.media:
                if media.blob:
                    names.append(media.blob)
            s.delete(capture)
    return names
