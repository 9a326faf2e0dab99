"""Hash sharing with platforms and hash banks, only with the victim's consent; banks imported.

**Export** (`export_case`): a case's PDQ hashes (every distinct registered variant of quality
>= 50, Meta's rule; the other side drops lower ones anyway) and MD5 hashes, in two formats:

* `hma`: JSON Lines for Meta's Hasher-Matcher-Actioner (HMA). Each line is one content's
  signals as HMA's curation API takes them, `{"<signal type>": "<signal value>"}`, with HMA's
  signal type names: `pdq` for photos and `video_md5` for videos (the body of
  `POST /c/bank/<bank>/signal`, so `while read -r l; do curl -H 'Content-Type: application/json'
  -d "$l" "$HMA/c/bank/NAME/signal"; done < FILE` loads a bank). HMA has no signal type for
  the MD5 of a photo (python-threatexchange: PdqSignal "pdq", VideoMD5Signal "video_md5"), so
  photo MD5s are left out of this format (and counted in the result); the CSV carries them.
* `csv`: a plain `signal_type,signal_value` CSV with `pdq` and `md5` rows (UTF-8, header
  row), for platforms and hotlines that take a list of hashes.

No item ids, labels, case numbers or categories go out: only hashes. An export is refused
(ConsentError, a clear message) unless the case's details say `consent.share_hashes` is true
(DESIGN §6.3); a bank is never re-exported. Every export and refusal is audited (who, which
internal case, which format, how many hashes; never a hash).

**Import** (`import_bank`): a file of hashes from a bank becomes a Case row with `bank` set to
its name, the category given (so matches route like a case of that category: a `minor` bank
keeps no bytes and routes to the hotline), and its signals encrypted under a case key of its
own exactly as a case's are (store.cases.signal_aad; workers.cases.takein's encryption), so the
matcher indexes it like any case. Each hash is one item ("b1", "b2", ...; label "bank NAME #n",
encrypted). Re-importing into the same bank adds only hashes it does not hold yet. Accepted
files: this module's two formats, a JSON array of HMA signal objects, the CSV that
`threatexchange dataset -P --csv` prints (collab,signal_type,signal_str,...) and
ThreatExchange's local-file lines (`pdq <hash>`). Imported PDQ hashes carry no quality (the
bank's hasher dropped those below 50), so they are recorded with quality 100.
A bank is not a victim: it cannot be authenticated on the intake, is never asked the yearly
question and never expires; `delete_bank` removes it (the same withdrawal as a case).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re

from sqlalchemy import select

from crypto import envelope
from crypto.sealing import unb64
from store import audit, casekeys
from store.cases import details_aad, label_aad, signal_aad
from store.models import Case, Item, Signal, today
from store.vocabulary import CATEGORIES, LANGUAGES
from workers.cases.decrypt import case_details, case_signals

log = logging.getLogger("kesu.banks")

FORMATS = ("hma", "csv")
PDQ_MIN_QUALITY = 50
IMPORT_TYPES = {"pdq": ("pdq", "photo"), "video_md5": ("md5", "video"), "md5": ("md5", "photo"),
                "photo_md5": ("md5", "photo"), "hash_pdq": ("pdq", "photo"), "video_hash_md5": ("md5", "video"),
                "hash_md5": ("md5", "photo")}
_HEX = {"pdq": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$")}
_BANK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_IMPORT_BYTES = 256 * 1024 * 1024


class ConsentError(PermissionError):
    """The victim did not consent to sharing her hashes (or this is not a victim's case)."""


class BankError(ValueError):
    """A bank file or name that cannot be imported; the message names the rule, never a hash."""


# --- export -----------------------------------------------------------------------------------

def _hashes(instance, case_id: int) -> dict:
    """{"pdq": [hex], "md5_photo": [hex], "md5_video": [hex]} of a case, distinct, in order."""
    with instance.session() as s:
        kinds = dict(s.execute(select(Item.item, Item.kind).where(Item.case_id == case_id)).all())
    out = {"pdq": [], "md5_photo": [], "md5_video": []}
    seen = set()
    for sig in case_signals(instance, case_id):
        t = sig.get("type")
        if t == "pdq" and int(sig.get("quality", 0)) >= PDQ_MIN_QUALITY:
            key = ("pdq", sig["hash"].lower())
            bucket = "pdq"
        elif t == "md5":
            key = ("md5", sig["hash"].lower())
            bucket = "md5_video" if kinds.get(sig.get("item")) == "video" else "md5_photo"
        else:
            continue
        if key not in seen:
            seen.add(key)
            out[bucket].append(key[1])
    return out


def check_consent(instance, case_id: int) -> None:
    """ConsentError unless the case exists, is a victim's case and consents to sharing hashes."""
    with instance.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.status == "withdrawn":
            raise ConsentError(f"no case {case_id}")
        if case.bank is not None:
            raise ConsentError(f"case {case_id} is the imported bank {case.bank!r}: banks are never re-shared")
    details = case_details(instance, case_id) or {}
    consent = details.get("consent") or {}
    if consent.get("share_hashes") is not True:
        raise ConsentError(f"case {case_id}: the victim did not consent to sharing her hashes "
                           "(consent.share_hashes is false); nothing was exported")


def export_case(instance, case_id: int, fmt: str, actor: str) -> tuple[bytes, dict]:
    """The export file's bytes and a summary; ConsentError (audited) without consent."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    try:
        check_consent(instance, case_id)
    except ConsentError:
        with instance.session() as s:
            audit.record(s, actor[:100], "hashes.export_refused", f"case:{case_id}", format=fmt)
        raise
    h = _hashes(instance, case_id)
    buf = io.StringIO()
    if fmt == "csv":
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["signal_type", "signal_value"])
        for value in h["pdq"]:
            w.writerow(["pdq", value])
        for value in h["md5_photo"] + h["md5_video"]:
            w.writerow(["md5", value])
        summary = {"pdq": len(h["pdq"]), "md5": len(h["md5_photo"]) + len(h["md5_video"]), "left_out": 0}
    else:
        for value in h["pdq"]:
            buf.write(json.dumps({"pdq": value}) + "\n")
        for value in h["md5_video"]:
            buf.write(json.dumps({"video_md5": value}) + "\n")
        summary = {"pdq": len(h["pdq"]), "md5": len(h["md5_video"]), "left_out": len(h["md5_photo"])}
    with instance.session() as s:
        audit.record(s, actor[:100], "hashes.export", f"case:{case_id}", format=fmt, **summary)
    return buf.getvalue().encode("utf-8"), {"format": fmt, **summary}


# --- import -----------------------------------------------------------------------------------

def parse_bank(data: bytes) -> tuple[list[tuple[str, str, str]], int]:
    """[(our type, kind, hex)] (distinct, in order) and the number of rows skipped."""
    if len(data) > MAX_IMPORT_BYTES:
        raise BankError("the file is too large")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BankError("the file is not UTF-8 text") from None
    pairs: list[tuple[str, str]] = []
    stripped = text.strip()
    if not stripped:
        raise BankError("the file is empty")
    if stripped[0] in "[{":
        try:
            if stripped[0] == "[":
                objs = json.loads(stripped)
            else:
                objs = [json.loads(line) for line in stripped.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise BankError(f"not JSON (line {getattr(exc, 'lineno', '?')})") from None
        for obj in objs:
            if not isinstance(obj, dict):
                raise BankError("each JSON entry must be an object of signal type -> value")
            if "signal_type" in obj:
                pairs.append((str(obj.get("signal_type", "")), str(obj.get("signal_value") or obj.get("signal_str") or "")))
            else:
                pairs.extend((str(k), str(v)) for k, v in obj.items())
    else:
        first = stripped.splitlines()[0].lower()
        if "," in first and "signal_type" in first:
            rows = list(csv.DictReader(io.StringIO(stripped)))
            for row in rows:
                row = {(k or "").strip().lower(): (v or "") for k, v in row.items()}
                pairs.append((row.get("signal_type", ""), row.get("signal_value") or row.get("signal_str") or ""))
        else:
            for line in stripped.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                t, _, v = line.replace(",", " ").partition(" ")
                pairs.append((t, v))
    out, seen, skipped = [], set(), 0
    for t, v in pairs:
        mapped = IMPORT_TYPES.get(t.strip().lower())
        v = v.strip().lower()
        if mapped is None or not _HEX[mapped[0]].match(v):
            skipped += 1
            continue
        if (mapped[0], v) in seen:
            continue
        seen.add((mapped[0], v))
        out.append((mapped[0], mapped[1], v))
    return out, skipped


def _enc(key: bytes, obj, aad: bytes) -> bytes:
    return envelope.encrypt(key, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), aad)


def bank_case_id(instance, name: str) -> int | None:
    with instance.session() as s:
        return s.execute(select(Case.id).where(Case.bank == name, Case.status != "withdrawn")).scalar()


def import_bank(instance, data: bytes, name: str, actor: str, category: str = "adult_ncii",
                language: str = "ja", notify: bool = True) -> dict:
    """Import (or add to) the bank `name`; returns {"case", "added", "known", "skipped"}."""
    if not _BANK_NAME.match(name or ""):
        raise BankError("a bank name is 1-100 letters, digits, '.', '_' or '-'")
    if category not in CATEGORIES:
        raise BankError("category is not one of " + "|".join(CATEGORIES))
    if language not in LANGUAGES:
        raise BankError("language must be ja or en")
    signals, skipped = parse_bank(data)
    if not signals:
        raise BankError(f"no PDQ or MD5 hash found ({skipped} row(s) not understood)")
    public = unb64(instance.public_key()[1])
    case_id = bank_case_id(instance, name)
    if case_id is None:
        with instance.session() as s:
            case = Case(number_hash=envelope.keyed_name(instance.pepper, b"bank:" + name.encode("utf-8")),
                        passphrase_hash="!bank", status="searching", category=category, language=language,
                        bank=name)
            s.add(case)
            s.flush()
            case_id = case.id
        key = instance.keystore.create(case_id, public)
        known: set = set()
        n = 0
    else:
        key = instance.keystore.get(case_id, instance.private_keys().private_key)
        if key is None:
            raise BankError(f"the key of bank {name!r} is gone")
        known = {(sig["type"], sig["hash"]) for sig in case_signals(instance, case_id)}
        with instance.session() as s:
            n = s.execute(select(Item.id).where(Item.case_id == case_id)).scalars().all().__len__()
    added = 0
    with instance.session() as s:
        case = s.get(Case, case_id)
        if not case.seal_key:
            casekeys.set_seal_key(case, key)
        for t, kind, value in signals:
            if (t, value) in known:
                continue
            known.add((t, value))
            n += 1
            item = f"b{n}"
            s.add(Item(case_id=case_id, item=item, kind=kind,
                       label=envelope.encrypt(key, f"bank {name} #{n}".encode("utf-8"), label_aad(case_id, item))))
            body = ({"type": "pdq", "hash": value, "quality": 100, "item": item, "variant": "full"} if t == "pdq"
                    else {"type": "md5", "hash": value, "item": item})
            s.add(Signal(case_id=case_id, item=item, type=t, ciphertext=_enc(key, body, signal_aad(case_id, item, t))))
            added += 1
        if case.category == "minor":
            category = "minor"        # as at take-in: once minor, always minor (no bytes kept)
        details = {"known_urls": [], "contact": None, "consents": [], "bank": name,
                   "consent": {"takedown": True, "hotline": category == "minor", "share_hashes": False,
                               "at": today().isoformat()}}
        case.details = _enc(key, details, details_aad(case_id))
        case.category = category
        case.updated_on = today()
        audit.record(s, actor[:100], "bank.import", f"case:{case_id}", bank=name, category=category,
                     added=added, skipped=skipped)
    if notify and added:
        from workers.cases.takein import notify_matcher
        notify_matcher(instance, case_id)
    return {"case": case_id, "bank": name, "added": added, "known": len(signals) - added, "skipped": skipped}


def delete_bank(instance, name: str, actor: str) -> int | None:
    """Remove a bank completely (rows, key, evidence only it needs), as a withdrawal does."""
    from store.cases import withdraw
    case_id = bank_case_id(instance, name)
    if case_id is None:
        return None
    with instance.session() as s:
        audit.record(s, actor[:100], "bank.delete", f"case:{case_id}", bank=name)
    withdraw(instance, case_id)
    return case_id
