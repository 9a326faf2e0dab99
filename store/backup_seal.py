"""Her rows in a main backup: URLs and the like, sealed to her case (issue 14, DESIGN §3).

The live database keeps the URLs of her captures, media and takedowns in the clear (staff work
with them; withdrawal deletes them). A main backup is kept for long and outlives a
withdrawal, so `kesu backup` writes those values sealed to the seal key of every case they
belong to (store.casekeys): a fresh data key per value, sealed to each case's public seal
key, then the value under it. No private key is needed to make a backup; restoring opens
them with the case keys of the key-store backup restored with it (the org key passphrase
opens those). Once the last key-store backup older than a withdrawal has expired, her values
in an old main backup are noise, and a restore leaves them empty.

What is sealed, per table (the rows that belong to one or more cases):
  captures (url, final_url, redirects, evidence): matched to a case (matches or capture_keys)
  media (url): matched to a case, or loaded by a page that was
  takedowns (url, media), takedown_events (detail): of a case's takedown (a notice's text is
  sealed to the case already; its recipient is the site's address, and a notice to her
  keeps none)
  crawl_jobs (url): asked for a case, or holding one of the captures above
  patrol_pages (url): whose URL is one of the URLs above
  submissions (sealed): a submission not taken in yet is sealed to the org key by her browser;
    in a backup it is sealed once more, to her case (`ensure_pending_keys` gives a case with a
    waiting submission its key first), so her withdrawal shreds it in old backups too
Rows of cases without a seal key (not yet taken in) stay as they are.
"""
from __future__ import annotations

import base64
import json
import logging

from sqlalchemy import select

from crypto import CryptoError, envelope
from crypto.sealing import seal, unseal

from .models import (
    Capture,
    CaptureKey,
    Case,
    CrawlJob,
    Match,
    Media,
    PatrolPage,
    Submission,
    Takedown,
    TakedownEvent,
)

log = logging.getLogger("kesu.backup")

TOKEN = "kesu-sealed:v1:"
JSON_KEY = "kesu_sealed"
COLUMNS: dict[str, tuple[str, ...]] = {
    "captures": ("url", "final_url", "redirects", "evidence"),
    "media": ("url",),
    "takedowns": ("url", "media"),
    "takedown_events": ("detail",),
    "crawl_jobs": ("url",),
    "patrol_pages": ("url",),
    "submissions": ("sealed",),
}
BINARY_COLUMNS = {("submissions", "sealed")}
JSON_COLUMNS = {("captures", "redirects"): list, ("captures", "evidence"): dict, ("takedowns", "media"): list,
                ("takedown_events", "detail"): dict}


def _aad(table: str, pk: int, column: str) -> bytes:
    return f"kesu:backup-row:v1:{table}:{pk}:{column}".encode()


def plan(conn) -> tuple[dict[str, dict[int, set[int]]], dict[int, bytes]]:
    """({table: {row id: case ids}}, {case id: seal key}) for the rows to seal, on `conn`."""
    seal_keys = {cid: bytes(k) for cid, k in conn.execute(select(Case.id, Case.seal_key)) if k}
    out: dict[str, dict[int, set[int]]] = {t: {} for t in COLUMNS}

    def add(table, pk, case_id):
        if case_id in seal_keys:
            out[table].setdefault(pk, set()).add(case_id)

    media_capture = dict(conn.execute(select(Media.id, Media.capture_id)).all())
    for case_id, media_id in conn.execute(select(Match.case_id, Match.media_id)):
        add("media", media_id, case_id)
        if media_id in media_capture:
            add("captures", media_capture[media_id], case_id)
    for capture_id, case_id in conn.execute(select(CaptureKey.capture_id, CaptureKey.case_id)):
        add("captures", capture_id, case_id)
    for media_id, capture_id in media_capture.items():     # every URL of a page she was found on
        for case_id in out["captures"].get(capture_id, ()):
            add("media", media_id, case_id)
    takedown_case = {}
    for td, case_id in conn.execute(select(Takedown.id, Takedown.case_id)):
        takedown_case[td] = case_id
        add("takedowns", td, case_id)
    for eid, td in conn.execute(select(TakedownEvent.id, TakedownEvent.takedown_id)):
        if td in takedown_case:
            add("takedown_events", eid, takedown_case[td])
    capture_job = dict(conn.execute(select(Capture.id, Capture.job_id)).all())
    for job_id, case_id in conn.execute(select(CrawlJob.id, CrawlJob.case_id).where(CrawlJob.case_id.is_not(None))):
        add("crawl_jobs", job_id, case_id)
    for capture_id, case_ids in out["captures"].items():
        if capture_job.get(capture_id) is not None:
            for case_id in case_ids:
                add("crawl_jobs", capture_job[capture_id], case_id)
    for sub_id, case_id in conn.execute(select(Submission.id, Submission.case_id)):
        add("submissions", sub_id, case_id)
    urls: dict[str, set[int]] = {}
    for table, model, cols in (("captures", Capture, (Capture.url, Capture.final_url)), ("media", Media, (Media.url,)),
                               ("takedowns", Takedown, (Takedown.url,))):
        rows = out[table]
        if rows:
            for pk, *values in conn.execute(select(model.id, *cols).where(model.id.in_(list(rows)))):
                for value in values:
                    if value:
                        urls.setdefault(value, set()).update(rows[pk])
    if urls:
        for pk, url in conn.execute(select(PatrolPage.id, PatrolPage.url)):
            for case_id in urls.get(url, ()):
                add("patrol_pages", pk, case_id)
    return {t: rows for t, rows in out.items() if rows}, seal_keys


def seal_value(value, table: str, pk: int, column: str, case_ids: set[int], seal_keys: dict[int, bytes]):
    """The value as a token sealed to each case (a JSON column gets {"kesu_sealed": token})."""
    if is_sealed(value):
        return value
    if (table, column) in BINARY_COLUMNS:
        value = base64.b64encode(bytes(value)).decode("ascii")
    key = envelope.new_key()
    body = {"k": {str(c): base64.b64encode(seal(seal_keys[c], key)).decode() for c in sorted(case_ids)},
            "c": base64.b64encode(envelope.encrypt(key, json.dumps(value).encode("utf-8"),
                                                   _aad(table, pk, column))).decode()}
    token = TOKEN + base64.b64encode(json.dumps(body).encode()).decode()
    if (table, column) in BINARY_COLUMNS:
        return token.encode("ascii")
    return {JSON_KEY: token} if (table, column) in JSON_COLUMNS else token


def is_sealed(value) -> bool:
    if isinstance(value, (bytes, memoryview)):
        return bytes(value[:len(TOKEN)]) == TOKEN.encode("ascii")
    return (isinstance(value, str) and value.startswith(TOKEN)) or \
        (isinstance(value, dict) and isinstance(value.get(JSON_KEY), str))


def open_value(instance, value, table: str, pk: int, column: str) -> tuple[object, bool]:
    """(the original value, True), or (an empty one, False) when no case it was sealed to
    has its key now."""
    from .casekeys import case_private
    token = value[JSON_KEY] if isinstance(value, dict) else value
    if isinstance(token, (bytes, memoryview)):
        token = bytes(token).decode("ascii")
    body = json.loads(base64.b64decode(token[len(TOKEN):]))
    for case_id, box in body["k"].items():
        private = case_private(instance, int(case_id))
        if private is None:
            continue
        try:
            key = unseal(private, base64.b64decode(box))
            value = json.loads(envelope.decrypt(key, base64.b64decode(body["c"]), _aad(table, pk, column)))
            return (base64.b64decode(value) if (table, column) in BINARY_COLUMNS else value), True
        except CryptoError:
            log.warning("%s %s: a sealed %s did not open with case %s's key", table, pk, column, case_id)
    return _empty(table, pk, column), False


def _empty(table: str, pk: int, column: str):
    if (table, column) in BINARY_COLUMNS:
        return b""                  # a take-in rejects and deletes it
    kind = JSON_COLUMNS.get((table, column))
    if kind is not None:
        return kind()
    return f"withdrawn:{table}:{pk}" if column == "url" else ""     # URLs are NOT NULL, some unique


def ensure_pending_keys(instance) -> int:
    """Give every case with a submission waiting to be taken in a case key and seal key now
    (only the org public key is needed), so the backup can seal the submission to her."""
    from crypto.sealing import unb64

    from .casekeys import set_seal_key
    n = 0
    with instance.session() as s:
        waiting = s.execute(select(Case).join(Submission, Submission.case_id == Case.id)
                            .where(Case.seal_key.is_(None)).distinct()).scalars().all()
        for case in waiting:
            if instance.keystore.exists(case.id):
                if instance.unlocked:
                    from .casekeys import seal_key
                    n += seal_key(instance, case) is not None
                continue
            try:
                key = instance.keystore.create(case.id, unb64(instance.public_key()[1]))
            except FileExistsError:
                continue
            set_seal_key(case, key)
            n += 1
    return n


def seal_rows(conn) -> int:
    """Seal her values in place (the SQLite copy of a backup). Returns the rows sealed."""
    from .models import Base
    todo, seal_keys = plan(conn)
    n = 0
    for table_name, rows in todo.items():
        table = Base.metadata.tables[table_name]
        cols = COLUMNS[table_name]
        for pk, case_ids in rows.items():
            row = conn.execute(select(*[table.c[c] for c in cols]).where(table.c.id == pk)).first()
            if row is None:
                continue
            values = {c: seal_value(v, table_name, pk, c, case_ids, seal_keys) for c, v in zip(cols, row)}
            conn.execute(table.update().where(table.c.id == pk).values(values))
            n += 1
    return n


def open_rows(instance) -> dict:
    """After a restore: open every sealed value the restored case keys open; empty the rest."""
    from .models import Base
    counts = {"opened": 0, "emptied": 0}
    with instance.session() as s:
        for table_name, cols in COLUMNS.items():
            table = Base.metadata.tables[table_name]
            for pk, *values in s.execute(select(table.c.id, *[table.c[c] for c in cols])).all():
                if not any(is_sealed(v) for v in values):
                    continue
                out = {}
                for c, v in zip(cols, values):
                    if is_sealed(v):
                        out[c], ok = open_value(instance, v, table_name, pk, c)
                        counts["opened" if ok else "emptied"] += 1
                s.execute(table.update().where(table.c.id == pk).values(out))
    return counts
