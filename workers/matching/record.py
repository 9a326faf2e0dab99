"""The one writer of Match rows (DESIGN §4: one home per concept).

`record(session, media, candidates)` runs inside the caller's transaction: the crawler's
(which holds public keys only), the matcher's retroactive matching, anything else that
learns that a media matches a case. It

* keeps only candidates whose case still exists and is not withdrawn,
* upserts one Match row per (case, media, kind): a retried job updates distance,
  confidence and evidence, and never touches a staff decision (`state`),
* moves each case through `store.cases.mark_found` (the one place a case becomes "found"),
* with `data_key` (the capture's, in plaintext: the crawler made it, the matcher opened it)
  seals it to each matched case's seal key (`store.casekeys`), and with `signals` puts the
  media's signals under that data key; the org-sealed copies are dropped, so a withdrawn
  case leaves no path through the org key to her evidence. Only public keys are needed:
  the crawler can call it. A case without a seal key yet (taken in before there were any,
  in a process that cannot derive it) keeps an org-sealed copy, and a warning says so.
* and returns the ids of the rows written.

Candidates: {"case", "kind", "distance", "confidence"?, ...MATCH_EVIDENCE_KEYS}; a candidate
without "confidence" is recorded with 0.0 (score them first where a model is at hand,
workers.matching.matcher.score). Never a signal in a row: only MATCH_EVIDENCE_KEYS are kept.
"""
from __future__ import annotations

import json
import logging

from sqlalchemy import select

from crypto.sealing import seal, unb64
from store import casekeys
from store.cases import live_cases, mark_found
from store.models import MATCH_EVIDENCE_KEYS, Capture, Case, Match, Media

log = logging.getLogger("kesu.match")


def record(session, media: Media, candidates: list[dict], *, instance=None, data_key: bytes | None = None,
           signals: dict | None = None) -> list[int]:
    """Upsert the Match rows of `media` for `candidates`; with `instance` and `data_key`, seal
    what is hers to each matched case (see the module's docstring)."""
    if not candidates:
        return []
    if media.id is None:
        session.flush()
    live = live_cases(session, {int(c["case"]) for c in candidates})
    ids: list[int] = []
    best: dict[tuple[int, str], dict] = {}
    for c in candidates:            # the same (case, kind) twice in one answer: the closest wins
        key = (int(c["case"]), str(c["kind"]))
        if key[0] in live and (key not in best or float(c["distance"]) < float(best[key]["distance"])):
            best[key] = c
    for (case_id, kind), c in best.items():
        row = session.execute(select(Match).where(Match.case_id == case_id, Match.media_id == media.id,
                                                  Match.kind == kind)).scalars().first()
        if row is None:
            row = Match(case_id=case_id, media_id=media.id, kind=kind, state="new")
            session.add(row)
        row.distance = float(c["distance"])
        row.confidence = float(c.get("confidence", 0.0))
        row.evidence = {k: c[k] for k in MATCH_EVIDENCE_KEYS if k in c}
        session.flush()
        ids.append(row.id)
    matched = sorted({case_id for case_id, _ in best})
    for case_id in matched:
        mark_found(session, case_id)
    if matched and instance is not None and data_key is not None:
        _seal_to_cases(session, instance, media, matched, data_key, signals)
    return ids


def _seal_to_cases(session, instance, media: Media, case_ids: list[int], data_key: bytes, signals) -> None:
    capture = session.get(Capture, media.capture_id)
    org_copy = False
    for case_id in case_ids:
        public = casekeys.seal_key(instance, session.get(Case, case_id))
        if public is None:
            log.warning("case %s has no seal key yet: capture %s keeps an org-sealed key", case_id, capture.id)
            org_copy = True
            continue
        casekeys.wrap_capture_key(session, capture, case_id, public, data_key)
    if org_copy:
        org = unb64(instance.public_key()[1])
        capture.data_key = seal(org, data_key)
        if signals is not None:
            media.signals = seal(org, json.dumps(signals, separators=(",", ":"), ensure_ascii=False).encode())
    elif signals is not None:
        casekeys.lock_media_signals(media, data_key, signals)
    session.flush()
