"""The one writer of Match rows (workers.matching.record) and the one way a case becomes "found"
(store.cases.mark_found): idempotent upserts, staff decisions kept, withdrawn cases skipped,
inside the caller's own transaction, and no other module writing either."""
import re
from pathlib import Path

from sqlalchemy import func, select
from test_backup import take_in_case

from store import cases
from store.models import Capture, Case, Match, Media
from workers.matching.record import record

ROOT = Path(__file__).resolve().parents[3]


def _media(s) -> Media:
    cap = Capture(url="https://example.net/p", status="ok")
    s.add(cap)
    s.flush()
    media = Media(capture_id=cap.id, url="https://example.net/a.jpg", sha256_key="00" * 32)
    s.add(media)
    s.flush()
    return media


def test_record_upserts_keeps_decisions_skips_withdrawn_and_marks_found(instance):
    mine, other, gone = take_in_case(instance), take_in_case(instance), take_in_case(instance)
    with instance.session() as s:
        s.get(Case, other).status = "requested"
        s.get(Case, gone).status = "withdrawn"
    hits = [{"case": mine, "kind": "pdq", "distance": 12, "item": "p1", "pdq": "ff" * 32},
            {"case": mine, "kind": "pdq", "distance": 4, "item": "p1"},
            {"case": other, "kind": "sha256", "distance": 0, "confidence": 0.9},
            {"case": gone, "kind": "md5", "distance": 0}]
    with instance.session() as s:             # the caller's transaction (the crawler's)
        media = _media(s)
        first = record(s, media, hits)
        media_id = media.id
    assert len(first) == 2
    with instance.session() as s:
        rows = {(m.case_id, m.kind): m for m in s.execute(select(Match)).scalars()}
        assert set(rows) == {(mine, "pdq"), (other, "sha256")}
        assert rows[mine, "pdq"].distance == 4                  # the closest of one answer
        assert rows[mine, "pdq"].evidence == {"item": "p1"}     # never a signal
        rows[mine, "pdq"].state = "confirmed"
        assert s.get(Case, mine).status == "found"
        assert s.get(Case, other).status == "requested"         # never moved back
    with instance.session() as s:             # a retried job: same rows, decision kept
        again = record(s, s.get(Media, media_id), [{**hits[1], "distance": 3, "confidence": 0.5}])
        assert again == [rows[mine, "pdq"].id]
    with instance.session() as s:
        assert s.execute(select(func.count()).select_from(Match)).scalar() == 2
        row = s.execute(select(Match).where(Match.case_id == mine)).scalars().one()
        assert (row.state, row.distance, row.confidence) == ("confirmed", 3, 0.5)


def test_mark_found_moves_only_cases_not_yet_found(instance):
    case_id = take_in_case(instance)
    with instance.session() as s:
        assert cases.mark_found(s, case_id) is True
        assert cases.mark_found(s, case_id) is False
        assert cases.mark_found(s, 10 ** 9) is False


def test_one_writer_of_matches_and_of_found():
    """No module but the writer adds Match rows; no module but store.cases sets "found"."""
    writers, founders = [], []
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "tests/", "node_modules/", "bench/")):
            continue
        text = path.read_text("utf-8")
        if re.search(r"(?<!class )\bMatch\(", text) and rel != "workers/matching/record.py":
            writers.append(rel)
        if re.search(r"""status\s*=\s*["']found["']""", text) and rel != "store/cases.py":
            founders.append(rel)
    assert writers == [] and founders == []
