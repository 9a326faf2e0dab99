"""The one writer of Match rows (DESIGN §4: one home per concept).

`record(session, media, candidates)` runs inside the caller's transaction: the crawler's
(which holds public keys only), the matcher's retroactive matching, anything else that
learns that a media matches a case. It

* keeps only candidates whose case still exists and is not withdrawn,
* upserts one Match row per (case, media, kind): a retried job updates distance,
  confidence and evidence, and never touches a staff decision (`state`),
* moves each case through `store.cases.mark_found` (the one place a case becomes "found"),
* and returns the ids of the rows written.

Candidates: {"case", "kind", "distance", "confidence"?, ...MATCH_EVIDENCE_KEYS}; a candidate
without "confidence" is recorded with 0.0 (score them first where a model is at hand,
workers.matching.matcher.score). Never a signal in a row: only MATCH_EVIDENCE_KEYS are kept.
"""
from __future__ import annotations

from sqlalchemy import select

from store.cases import live_cases, mark_found
from store.models import MATCH_EVIDENCE_KEYS, Match, Media


def record(session, media: Media, candidates: list[dict]) -> list[int]:
    """Upsert the Match rows of `media` (flushed, so it has an id) for `candidates`."""
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
    for case_id in sorted({case_id for case_id, _ in best}):
        mark_found(session, case_id)
    return ids
