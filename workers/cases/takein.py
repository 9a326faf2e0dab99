"""Take-in: open a sealed submission, check it, re-encrypt it under the case key.

`take_in(submission_id)` is the RQ job the intake enqueues (its only argument is the id).
It opens the sealed box with the org private key held in this worker's memory, validates
the payload (DESIGN.md §6.3; garbage is rejected with a clear reason and never stored),
makes the case key on the first take-in, writes Item rows (labels encrypted) and Signal
rows (each signal's JSON encrypted under the case key, bound by associated data to case,
item and type), sets the case's category and language and its encrypted details (known
URLs, contact, consent), and deletes the submission, all in one transaction. A retried
job finds the submission gone and does nothing: idempotent.

`take_in_pending(instance)` takes in every submission still waiting (the intake leaves
them in the database when no queue was reachable; `kesu crawl --wait` and the CLI call it).
`case_signals(instance, case_id)` is the reading side for the matcher and the back office.
"""
import json
import logging
import math
import re
from datetime import date

from sqlalchemy import select

from crypto import CryptoError, envelope
from crypto.sealing import unseal
from store import casekeys
from store.cases import details_aad, label_aad, signal_aad
from store.models import Case, Item, Signal, Submission, today
from store.vocabulary import CATEGORIES, FACE_ITEM_KINDS, ITEM_KINDS, LANGUAGES
from workers.system import context

log = logging.getLogger("kesu.takein")

PDQ_VARIANTS = ("full", "trimmed", "crop-1:1", "crop-4:3", "crop-3:4", "crop-16:9", "crop-9:16", "top-third")
MAX_ITEMS = 200
MAX_SIGNALS = 20_000
MAX_FRAMES = 10_800
MAX_URLS = 100
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_ITEM = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")


class PayloadError(ValueError):
    """The sealed payload is not what §6.3 describes. The message names the rule, never content."""


# --- validation -------------------------------------------------------------------------------

def _need(cond: bool, message: str) -> None:
    if not cond:
        raise PayloadError(message)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _keys(obj: dict, required: set, optional: set, where: str) -> None:
    _need(isinstance(obj, dict), f"{where} must be an object")
    missing = required - obj.keys()
    _need(not missing, f"{where} lacks {', '.join(sorted(missing))}")
    extra = obj.keys() - required - optional
    _need(not extra, f"{where} has unknown fields: {', '.join(sorted(str(k)[:30] for k in extra))}")


def validate(payload) -> dict:
    """The payload when it follows §6.3, else PayloadError naming the first broken rule."""
    _keys(payload, {"version", "category", "language", "consent", "signals", "items"},
          {"known_urls", "contact"}, "payload")
    _need(payload["version"] == 1 and _is_int(payload["version"]), "version must be 1")
    _need(payload["category"] in CATEGORIES, "category is not one of " + "|".join(CATEGORIES))
    _need(payload["language"] in LANGUAGES, "language must be ja or en")

    urls = payload.get("known_urls") or []
    _need(isinstance(urls, list) and len(urls) <= MAX_URLS, f"known_urls must be a list of at most {MAX_URLS}")
    for url in urls:
        _need(isinstance(url, str) and len(url) <= 2048 and re.match(r"^https?://\S+$", url) is not None,
              "known_urls must hold http(s) URLs")

    contact = payload.get("contact")
    if contact is not None:
        _keys(contact, {"email"}, set(), "contact")
        _need(isinstance(contact["email"], str) and _EMAIL.match(contact["email"]) is not None,
              "contact.email is not an e-mail address")

    consent = payload["consent"]
    _keys(consent, {"takedown", "hotline", "share_hashes", "at"}, {"faces"}, "consent")
    _need(consent["takedown"] is True, "consent.takedown must be true")
    for name in ("hotline", "share_hashes", "faces"):
        _need(isinstance(consent.get(name, False), bool), f"consent.{name} must be true or false")
    _need(isinstance(consent["at"], str) and _DAY.match(consent["at"]) is not None, "consent.at must be YYYY-MM-DD")
    try:
        date.fromisoformat(consent["at"])
    except ValueError:
        raise PayloadError("consent.at is not a real day") from None

    items = payload["items"]
    _need(isinstance(items, list) and len(items) <= MAX_ITEMS, f"items must be a list of at most {MAX_ITEMS}")
    kinds: dict[str, str] = {}
    for it in items:
        _keys(it, {"item", "kind", "label"}, set(), "items[]")
        _need(isinstance(it["item"], str) and _ITEM.match(it["item"]) is not None,
              "items[].item must be 1-20 letters, digits, - or _")
        _need(it["item"] not in kinds, "items[].item must be unique")
        _need(it["kind"] in ITEM_KINDS, "items[].kind must be " + ", ".join(ITEM_KINDS))
        _need(isinstance(it["label"], str) and len(it["label"]) <= 200, "items[].label must be text (200 at most)")
        kinds[it["item"]] = it["kind"]

    signals = payload["signals"]
    _need(isinstance(signals, list) and len(signals) <= MAX_SIGNALS, f"signals must be a list of at most {MAX_SIGNALS}")
    for sig in signals:
        _need(isinstance(sig, dict), "signals[] must be objects")
        kind = kinds.get(sig.get("item"))
        _need(kind is not None, "signals[].item must name one of items[]")
        t = sig.get("type")
        if t == "pdq":
            _keys(sig, {"type", "hash", "quality", "item", "variant"}, set(), "pdq signal")
            _need(isinstance(sig["hash"], str) and _HEX64.match(sig["hash"]) is not None, "pdq hash must be 64 lowercase hex")
            _need(_is_int(sig["quality"]) and 0 <= sig["quality"] <= 100, "pdq quality must be 0-100")
            _need(sig["variant"] in PDQ_VARIANTS, "pdq variant is not one of " + ", ".join(PDQ_VARIANTS))
            _need(kind in ("photo", "source"), "pdq signals belong to photos and source photos")
        elif t == "sha256":
            _keys(sig, {"type", "hash", "item"}, set(), "sha256 signal")
            _need(isinstance(sig["hash"], str) and _HEX64.match(sig["hash"]) is not None, "sha256 must be 64 lowercase hex")
            _need(kind in ("photo", "video"), "file hashes belong to photos and videos")
        elif t == "md5":
            _keys(sig, {"type", "hash", "item"}, set(), "md5 signal")
            _need(isinstance(sig["hash"], str) and _HEX32.match(sig["hash"]) is not None, "md5 must be 32 lowercase hex")
            _need(kind in ("photo", "video"), "file hashes belong to photos and videos")
        elif t == "vpdq":
            _keys(sig, {"type", "frames", "item"}, set(), "vpdq signal")
            frames = sig["frames"]
            _need(isinstance(frames, list) and 0 < len(frames) <= MAX_FRAMES, f"vpdq frames must be 1-{MAX_FRAMES}")
            for fr in frames:
                _need(isinstance(fr, list) and len(fr) == 3 and _is_num(fr[0]) and fr[0] >= 0
                      and _is_int(fr[1]) and 0 <= fr[1] <= 100
                      and isinstance(fr[2], str) and _HEX64.match(fr[2]) is not None,
                      "vpdq frames must be [seconds, quality 0-100, 64 hex]")
            _need(kind == "video", "vpdq signals belong to videos")
        elif t == "face":
            _keys(sig, {"type", "descriptor", "item"}, set(), "face signal")
            d = sig["descriptor"]
            _need(isinstance(d, list) and len(d) == 128 and all(_is_num(x) and abs(x) < 10 for x in d),
                  "face descriptor must be 128 finite numbers")
            _need(kind in FACE_ITEM_KINDS, "faces are taken from selfies and source photos only")
        else:
            raise PayloadError("signals[].type must be pdq, sha256, md5, vpdq or face")
    return payload


# --- the job ------------------------------------------------------------------------------------

def notify_matcher(instance, case_id: int) -> bool:
    """Tell the matcher (queue `match`) that a case got signals; by id, best effort: its
    periodic refresh picks the case up anyway when no queue is reachable."""
    from workers import jobs
    return jobs.enqueue(instance.settings, "case_added", int(case_id))


def take_in(submission_id: int) -> dict:
    """RQ job: take in one submission (by id) with this worker's unlocked org key."""
    instance = context.instance()
    result = take_in_submission(instance, int(submission_id))
    if result.get("status") == "taken_in":
        notify_matcher(instance, result["case"])
    return result


def take_in_pending(instance, notify: bool = True) -> int:
    """Take in every waiting submission, oldest first; returns how many were taken in."""
    with instance.session() as s:
        ids = list(s.execute(select(Submission.id).order_by(Submission.id)).scalars())
    done, cases_seen = 0, set()
    for sid in ids:
        result = take_in_submission(instance, sid)
        if result.get("status") == "taken_in":
            done += 1
            cases_seen.add(result["case"])
    if notify:
        for case_id in sorted(cases_seen):
            notify_matcher(instance, case_id)
    return done


def _enc(key: bytes, obj, aad: bytes) -> bytes:
    return envelope.encrypt(key, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), aad)


def take_in_submission(instance, submission_id: int) -> dict:
    with instance.session() as s:
        sub = s.get(Submission, submission_id)
        if sub is None:
            return {"status": "gone"}           # already taken in (a retried job) or withdrawn
        case = s.get(Case, sub.case_id)
        keys = instance.private_keys(sub.key_id)
        try:
            payload = validate(json.loads(unseal(keys.private_key, sub.sealed).decode("utf-8")))
        except (CryptoError, UnicodeDecodeError, json.JSONDecodeError, PayloadError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, PayloadError) else type(exc).__name__
            log.warning("submission %s rejected: %s", submission_id, reason)
            s.delete(sub)
            return {"status": "rejected", "reason": reason}

        case_key = instance.keystore.get_or_create(case.id, keys.public_key, keys.private_key)
        if not case.seal_key:
            casekeys.set_seal_key(case, case_key)        # what is hers will be sealed to it

        existing = set(s.execute(select(Item.item).where(Item.case_id == case.id)).scalars())
        rename: dict[str, str] = {}
        for it in payload["items"]:
            name = it["item"]
            n = 2
            while name in existing:              # an add-more must not overwrite an earlier item
                name = f"{it['item'][:16]}-{n}"
                n += 1
            existing.add(name)
            rename[it["item"]] = name
            s.add(Item(case_id=case.id, item=name, kind=it["kind"],
                       label=envelope.encrypt(case_key, it["label"].encode("utf-8"), label_aad(case.id, name))))
        for sig in payload["signals"]:
            item = rename[sig["item"]]
            body = dict(sig, item=item)
            s.add(Signal(case_id=case.id, item=item, type=sig["type"],
                         ciphertext=_enc(case_key, body, signal_aad(case.id, item, sig["type"]))))

        details = {"known_urls": [], "contact": None, "consents": []}
        if case.details:
            details = json.loads(envelope.decrypt(case_key, case.details, details_aad(case.id)))
        for url in payload.get("known_urls") or []:
            if url not in details["known_urls"]:
                details["known_urls"].append(url)
        if payload.get("contact"):
            details["contact"] = payload["contact"]
        details["consents"].append(payload["consent"])
        details["consent"] = payload["consent"]
        case.details = _enc(case_key, details, details_aad(case.id))
        if case.category is None or payload["category"] == "minor":
            case.category = payload["category"]     # a later "minor" makes the whole case one
        case.language = case.language or payload["language"]
        case.updated_on = today()
        s.delete(sub)
        return {"status": "taken_in", "case": case.id, "items": len(payload["items"]),
                "signals": len(payload["signals"])}
