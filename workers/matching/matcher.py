"""The matcher: one long-lived process on the `match` queue holds every case's signals in memory.

`kesu worker --queues match` runs an RQ SimpleWorker (no fork), so the module-level index
built by `matcher()` survives from job to job. It is built from the database at first use
(each case's signals decrypted with its case key by workers.cases.decrypt.case_signals, in this
process's memory only) and kept fresh three ways:

- `case_added(case_id)` (enqueued after a take-in) indexes the case and matches it against
  every media already crawled (retroactive matching; no page is crawled again);
- `case_withdrawn(case_id)` drops it (and store.cases.withdraw's hook drops it at once when
  the withdrawal runs in this process);
- `refresh()` compares the cases and signal counts in the database with the index; it runs
  before any query when the last one is older than REFRESH_SECONDS and as the recurring
  scheduled job `match_refresh`, so a new case is searchable and a withdrawn one gone within
  a minute even when a job was lost.

Job arguments are ids; signals are never logged, never in Redis, never written. What is
written is a Match row: ids, kind, distance, confidence and non-signal evidence.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from sqlalchemy import func, select

from crypto import envelope
from crypto.sealing import unseal
from store import casekeys
from store.models import Capture, Case, Match, Media, Signal
from store.urls import site_of
from workers.matching.confidence import FLAG_AT, Model, calibration, domain_logit, features, fit
from workers.matching.index import Index
from workers.matching.record import record
from workers.system import context

log = logging.getLogger("kesu.match")

REFRESH_SECONDS = 30
ASK_SECONDS = 60                        # a crawl worker waits this long for the matcher's answer
WITHDRAWN_CHECK_SECONDS = 1.0           # every matcher notices a withdrawal within about this
MODEL_FILE = "confidence-model.json"

_lock = threading.RLock()
_index: Index | None = None
_counts: dict[int, int] = {}            # case id -> signal rows indexed
_categories: dict[int, str | None] = {}  # case id -> category (the crawler keeps no bytes for "minor")
_checked_at = 0.0
_built_for: str | None = None
_model: Model | None = None


# --- reading signals -----------------------------------------------------------------------

def case_signals(instance, case_id: int) -> list[dict]:
    from workers.cases.decrypt import case_signals as decrypt
    return decrypt(instance, case_id)


def media_signals(instance, media: Media, session=None) -> dict | None:
    """A crawled media's signals, in memory only: sealed to the org key when it matched
    nothing, else under its capture's data key through any case it matched (store.casekeys)."""
    if session is not None:
        return casekeys.media_signals(instance, session, media)
    with instance.session() as s:
        return casekeys.media_signals(instance, s, s.get(Media, media.id))


def _db_counts(instance) -> dict[int, int]:
    with instance.session() as s:
        rows = s.execute(select(Signal.case_id, Case.category, func.count()).join(Case, Case.id == Signal.case_id)
                         .where(Case.status != "withdrawn").group_by(Signal.case_id, Case.category)).all()
    _categories.clear()
    _categories.update({int(c): cat for c, cat, _ in rows})
    return {int(c): int(n) for c, _, n in rows}


# --- the index -------------------------------------------------------------------------------

def matcher(instance=None, refresh_if_older: float = REFRESH_SECONDS) -> Index:
    """The process's index, built at first use and refreshed when older than refresh_if_older."""
    global _index, _built_for
    instance = instance or context.instance()
    with _lock:
        if _index is None or _built_for != instance.settings.database_url:
            _index, _built_for = Index(), instance.settings.database_url
            _counts.clear()
            refresh(instance)
            seed_cohort(instance, _index)
        elif time.monotonic() - _checked_at > refresh_if_older or _withdrawn_changed(instance):
            refresh(instance)
        return _index


_withdrawn: tuple[float, int | None] = (0.0, None)


def _withdrawn_changed(instance) -> bool:
    """A case was withdrawn since the last look (one cheap count, at most once a second): every
    matcher process drops it within about a second, not at its next 30 s refresh."""
    global _withdrawn
    if time.monotonic() - _withdrawn[0] < WITHDRAWN_CHECK_SECONDS:
        return False
    with instance.session() as s:
        n = int(s.execute(select(func.count()).select_from(Case).where(Case.status == "withdrawn")).scalar() or 0)
    changed = n != _withdrawn[1]            # the first look refreshes too: it has no baseline
    _withdrawn = (time.monotonic(), n)
    return changed


def refresh(instance=None) -> dict:
    """Make the index hold exactly the cases (and signal counts) the database holds."""
    global _checked_at
    instance = instance or context.instance()
    with _lock:
        if _index is None or _built_for != instance.settings.database_url:
            matcher(instance)
            return {"added": len(_counts), "removed": 0}
        want = _db_counts(instance)
        added = removed = 0
        for case_id in set(_counts) - set(want):
            _index.remove_case(case_id)
            _counts.pop(case_id, None)
            removed += 1
        for case_id, n in want.items():
            if _counts.get(case_id) != n:
                _index.add_case(case_id, case_signals(instance, case_id))
                _counts[case_id] = n
                added += 1
        if added > 1:
            _index.compact()      # many cases loaded one by one: one segment queries fastest
        _checked_at = time.monotonic()
        if added or removed:
            log.info("index refreshed: %d case(s) added or updated, %d removed", added, removed)
        return {"added": added, "removed": removed}


COHORT_SEED_MEDIA = 5000


def seed_cohort(instance, index: Index, limit: int = COHORT_SEED_MEDIA) -> int:
    """Fill the face cohort (index.FaceCohort) from the latest crawled media that hold faces,
    so that a restarted matcher ranks face candidates at once. Returns the faces added."""
    with instance.session() as s:
        rows = s.execute(select(Media).where(Media.signals.is_not(None))
                         .order_by(Media.id.desc()).limit(limit)).scalars().all()
        found = [media_signals(instance, m, s) for m in rows]
    vectors = [f["descriptor"] for sig in found if sig for f in sig.get("faces") or [] if f.get("descriptor")]
    return index.cohort.add(vectors) if vectors else 0


def loaded() -> bool:
    """Whether this process holds an index (a crawl worker that asks over the queue never does)."""
    return _index is not None


def reset() -> None:
    """Forget the in-memory index (tests, and a worker that changes instance)."""
    global _index, _built_for, _model, _checked_at, _history
    with _lock:
        _index, _built_for, _model, _checked_at, _history = None, None, None, 0.0, (0.0, {})
        _counts.clear()
        _categories.clear()


def forget_case(instance, case_id: int) -> None:
    """Drop a case from this process's index now (store.cases withdraw hook)."""
    with _lock:
        if _index is not None:
            _index.remove_case(int(case_id))
            _counts.pop(int(case_id), None)


# --- confidence --------------------------------------------------------------------------------

def model(instance) -> Model:
    global _model
    if _model is None:
        _model = Model.load(instance.settings.instance / MODEL_FILE)
    return _model



def _domain_history(session) -> dict[str, tuple[int, int]]:
    """domain -> (confirmed pairs, rejected pairs), from staff decisions."""
    rows = session.execute(select(Match.case_id, Match.media_id, Match.state, Media.url)
                           .join(Media, Media.id == Match.media_id)
                           .where(Match.state.in_(("confirmed", "rejected")))).all()
    pairs = {(c, m): (state, url) for c, m, state, url in rows}
    out: dict[str, list[int]] = {}
    for state, url in pairs.values():
        tally = out.setdefault(site_of(url), [0, 0])
        tally[0 if state == "confirmed" else 1] += 1
    return {d: (c, r) for d, (c, r) in out.items()}


_history: tuple[float, dict] = (0.0, {})
HISTORY_SECONDS = 300


def _cached_history(instance) -> dict:
    """The domain history, re-read at most every HISTORY_SECONDS (one query per crawl, not per media)."""
    global _history
    if time.monotonic() - _history[0] > HISTORY_SECONDS or not _history[0]:
        with instance.session() as s:
            _history = (time.monotonic(), _domain_history(s))
    return _history[1]


def score(instance, candidates: list[dict], url: str = "", history: dict | None = None) -> list[dict]:
    """Add "confidence" (and "flagged") to candidates: one probability per (case, media) pair,
    from all the kinds that agree on it."""
    m = model(instance)
    if history is None:
        history = _cached_history(instance)
    prior = domain_logit(*history.get(site_of(url), (0, 0))) if url else 0.0
    by_case: dict[int, list[dict]] = {}
    for c in candidates:
        by_case.setdefault(c["case"], []).append(c)
    for group in by_case.values():
        p = round(m.confidence(group, prior), 4)
        for c in group:
            c["confidence"] = p
            c["flagged"] = p >= FLAG_AT
            if c["case"] in _categories:
                c["category"] = _categories[c["case"]]
    return candidates


# --- the crawler's hook and the writes -----------------------------------------------------------

def match_media(instance, media_signals: dict, url: str = "") -> list[dict]:
    """Candidates for one media's signals (the crawler's hook). Writes nothing.

    Each: {"case", "kind", "distance", "item", "confidence", "flagged", "category", ...evidence};
    each (case, kind) once with its best distance, only within that kind's threshold. A
    candidate whose "category" is "minor" means: keep no bytes and no screenshot (DESIGN §3).
    """
    idx = matcher(instance)
    return score(instance, idx.query(media_signals or {}), url)


def record_matches(instance, media_id: int, candidates: list[dict]) -> list[int]:
    """Score what is not scored yet and record it through the one writer (workers.matching.record).
    Idempotent: one row per case, media, kind; a staff decision (state) is never touched."""
    if not candidates:
        return []
    with instance.session() as s:
        media = s.get(Media, media_id)
        if media is None:
            return []
        if any("confidence" not in c for c in candidates):
            candidates = score(instance, [dict(c) for c in candidates], media.url, _domain_history(s))
        # What is hers goes under her case key: the capture's data key (a new one when nothing
        # on the page had matched before) and this media's signals.
        signals = media_signals(instance, media, s)
        data_key = casekeys.capture_key(instance, s, s.get(Capture, media.capture_id)) or envelope.new_key()
        return record(s, media, candidates, instance=instance, data_key=data_key, signals=signals)


def match_stored_media(instance, media_id: int) -> list[int]:
    """Match one stored media (its sealed signals) against the whole index and record it."""
    with instance.session() as s:
        media = s.get(Media, media_id)
        signals = media_signals(instance, media, s) if media is not None else None
        url = media.url if media is not None else ""
    if signals is None:
        return []
    return record_matches(instance, media_id, match_media(instance, signals, url))


def retro_match(instance, case_id: int, batch: int = 500) -> int:
    """Match one case against every media already crawled (nothing is fetched again).

    A one-case index is built for it, so each stored media is unsealed once and asked only
    about this case. Returns how many media matched."""
    one = Index()
    if _index is not None:
        one.cohort = _index.cohort       # the crawl's faces rank hers; the stored media join it
    one.add_case(case_id, case_signals(instance, case_id))
    if not one.case_ids() or not sum(one.stats()[k] for k in ("pdq", "frames", "faces", "sha256", "md5")):
        return 0
    matched = 0
    last = 0
    with instance.session() as s:
        history = _domain_history(s)
    while True:
        with instance.session() as s:
            rows = s.execute(select(Media).where(Media.id > last,
                                                 Media.signals.is_not(None) | Media.case_signals.is_not(None))
                             .order_by(Media.id).limit(batch)).scalars().all()
            work = [(m.id, m.url, media_signals(instance, m, s)) for m in rows]
        if not work:
            break
        for media_id, url, signals in work:
            last = media_id
            if not signals:
                continue
            found = one.query(signals)
            if found:
                record_matches(instance, media_id, score(instance, found, url, history))
                matched += 1
    return matched


# --- RQ jobs (arguments are ids only) ---------------------------------------------------------

def case_added(case_id) -> dict:
    """A case was taken in (or got more signals): index it now and match it retroactively."""
    instance = context.instance()
    case_id = int(case_id)
    with instance.session() as s:
        case = s.get(Case, case_id)
        category = case.category if case is not None and case.status != "withdrawn" else None
        gone = case is None or case.status == "withdrawn"
    if gone:
        forget_case(instance, case_id)
        return {"case": case_id, "retro_matched": 0}
    with _lock:
        idx = matcher(instance, refresh_if_older=float("inf"))
        signals = case_signals(instance, case_id)
        idx.add_case(case_id, signals)
        _counts[case_id] = len(signals)
        _categories[case_id] = category
    return {"case": case_id, "retro_matched": retro_match(instance, case_id)}


def case_withdrawn(case_id) -> dict:
    instance = context.instance()
    forget_case(instance, int(case_id))
    return {"case": int(case_id), "removed": True}


def refresh_job(_ref: str = "") -> dict:
    return refresh(context.instance())


def answer(sealed: bytes, url: str = "") -> list[dict]:
    """RQ job on the `match` queue: a crawl worker's question. `sealed` is one media's signals
    sealed to the org public key (never plaintext in Redis); the answer is candidates (case ids,
    kinds, distances, non-signal evidence), as `match_media` gives them. Writes nothing."""
    instance = context.instance()
    signals = json.loads(unseal(instance.private_keys().private_key, sealed))
    return match_media(instance, signals, url)


def ask(instance, signals: dict, url: str = "", timeout: float = ASK_SECONDS) -> list[dict] | None:
    """Ask the long-lived matcher over the queue (the crawler's way: it builds no index and opens
    no case's signals). None when no matcher listens or none answered in time."""
    from crypto.sealing import seal, unb64
    from workers.system.queue import connection, queue, workers_listening
    settings = instance.settings
    if "match" in context.queues or not workers_listening(settings, "match"):
        return None         # this process is the matcher (asking itself would wait forever), or none runs
    public = unb64(instance.public_key()[1])
    conn = connection(settings)
    job = queue(settings, "match", conn).enqueue(
        "workers.matching.matcher.answer", seal(public, json.dumps(signals, separators=(",", ":")).encode()), url,
        result_ttl=60, failure_ttl=600, job_timeout=max(30, int(timeout)), at_front=True,
        description="answer(sealed signals)")
    result = job.latest_result(timeout=int(timeout))
    if result is None or result.type != result.Type.SUCCESSFUL:
        log.warning("the matcher did not answer in %.0f s", timeout)
        job.cancel()
        return None
    return list(result.return_value or [])


def match_media_job(media_id) -> list[int]:
    return match_stored_media(context.instance(), int(media_id))


def retrain(instance=None) -> dict:
    """Refit the confidence model from staff decisions; report its calibration; rescore open matches."""
    global _model
    instance = instance or context.instance()
    with instance.session() as s:
        X, y = training_data(s)
    m = fit(X, y)
    m.save(instance.settings.instance / MODEL_FILE)
    with _lock:
        _model = m
    report = calibration(X, y)
    with instance.session() as s:
        history = _domain_history(s)
        rows = s.execute(select(Match, Media.url).join(Media, Media.id == Match.media_id)
                         .where(Match.state.in_(("new", "unsure")))).all()
        pairs: dict[tuple, list] = {}
        for row, url in rows:
            pairs.setdefault((row.case_id, row.media_id), []).append((row, url))
        for group in pairs.values():
            url = group[0][1]
            ev = [_as_candidate(r) for r, _ in group]
            p = m.confidence(ev, domain_logit(*history.get(site_of(url), (0, 0))))
            for r, _ in group:
                r.confidence = round(p, 4)
    log.info("confidence model retrained on %d decisions (Brier %s)", len(y), report.get("brier"))
    return {"trained_on": int(len(y)), "weights": m.weights.tolist(), "calibration": report}


def retrain_job(_ref: str = "") -> dict:
    return retrain(context.instance())


def _as_candidate(row: Match) -> dict:
    return {"kind": row.kind, "distance": row.distance, **(row.evidence or {})}


def training_data(session):
    """Features and labels of every (case, media) pair staff confirmed or rejected.

    The domain prior of each pair is computed without that pair's own decision."""
    import numpy as np
    rows = session.execute(select(Match, Media.url).join(Media, Media.id == Match.media_id)
                           .where(Match.state.in_(("confirmed", "rejected")))).all()
    pairs: dict[tuple, list] = {}
    for row, url in rows:
        pairs.setdefault((row.case_id, row.media_id), []).append((row, url))
    history = _domain_history(session)
    X, y = [], []
    for group in pairs.values():
        url = group[0][1]
        label = 1 if any(r.state == "confirmed" for r, _ in group) else 0
        c, r = history.get(site_of(url), (0, 0))
        c, r = (c - 1, r) if label else (c, r - 1)
        X.append(features([_as_candidate(m) for m, _ in group], domain_logit(max(c, 0), max(r, 0))))
        y.append(label)
    return np.asarray(X).reshape(-1, len(features([]))), np.asarray(y, dtype=float)


# --- wiring ------------------------------------------------------------------------------------

def _register() -> None:
    """A withdrawal in this process drops the case from this process's index at once."""
    from store.cases import WITHDRAW_HOOKS, on_withdraw
    if forget_case not in WITHDRAW_HOOKS:
        on_withdraw(forget_case)


_register()
