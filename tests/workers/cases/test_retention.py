"""Retention on a real instance (SQLite, and PostgreSQL when configured) with the clock moved
(`now=`), never slept: unmatched capture signals, closed cases, archived notices and logs
expire after their periods; the yearly question goes out by real SMTP (aiosmtpd on loopback),
an unanswered case goes on hold and staff are told, and nothing of hers is deleted for it."""
import email
import email.policy
import os
import threading
from datetime import timedelta

import pytest
from conftest import make_instance
from sqlalchemy import func, select
from takedown_helpers import make_case, make_takedown

from store import continuation
from store.models import AuditEntry, Capture, Case, Match, Media, Notice, Schedule, Signal, Takedown, utcnow
from workers.cases import retention
from workers.system import context

BASE = utcnow().replace(microsecond=0)


def audit_actions(instance, action):
    with instance.session() as s:
        return s.execute(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).scalars().all()


# --- unmatched capture signals ---------------------------------------------------------------------

def _capture(instance, at, media: list[tuple[str, int | None]]) -> tuple[int, list[int]]:
    """A capture at `at` with media; each (url, case it matched or None)."""
    ids = []
    with instance.session() as s:
        cap = Capture(url="http://site.example/p", final_url="http://site.example/p", status="ok", captured_at=at)
        s.add(cap)
        s.flush()
        for url, case_id in media:
            m = Media(capture_id=cap.id, url=url, sha256_key=os.urandom(32).hex(), signals=b"sealed signals")
            s.add(m)
            s.flush()
            if case_id:
                s.add(Match(case_id=case_id, media_id=m.id, kind="pdq", distance=4, confidence=0.9))
            ids.append(m.id)
        return cap.id, ids


def test_unmatched_signals_expire_matched_evidence_stays(instance):
    case_id = make_case(instance)
    old = BASE - timedelta(days=200)
    mixed, (kept, dropped) = _capture(instance, old, [("http://site.example/a.jpg", case_id),
                                                      ("http://site.example/b.jpg", None)])
    lonely, (lonely_media,) = _capture(instance, old, [("http://site.example/c.jpg", None)])
    empty, _ = _capture(instance, old, [])
    recent, (recent_media,) = _capture(instance, BASE - timedelta(days=10), [("http://site.example/d.jpg", None)])

    assert retention.expire_unmatched(instance, now=BASE - timedelta(days=25)) == {"media": 0, "captures": 0}
    got = retention.expire_unmatched(instance, now=BASE)
    assert got == {"media": 2, "captures": 2}
    with instance.session() as s:
        assert s.get(Media, kept) is not None and s.get(Capture, mixed) is not None   # evidence of a match
        assert s.get(Media, dropped) is None
        assert s.get(Capture, lonely) is None and s.get(Media, lonely_media) is None
        assert s.get(Capture, empty) is None
        assert s.get(Capture, recent) is not None and s.get(Media, recent_media) is not None
    assert audit_actions(instance, "retention.unmatched")[-1].detail == {"media": 2, "captures": 2}
    # the period is a setting: 5 days takes the recent one too
    short = make_instance(instance.settings.instance, instance.settings.database_url, retention_unmatched_days=5)
    assert retention.expire_unmatched(short, now=BASE) == {"media": 1, "captures": 1}


# --- closed cases -------------------------------------------------------------------------------

def test_a_closed_case_is_withdrawn_after_the_period_and_can_be_reopened_before(instance):
    closing = make_case(instance, contact="she@example.net")
    changed_mind = make_case(instance, contact="other@example.net")
    make_takedown(instance, closing, None, "https://tube.example/v/1", status="requested")
    continuation.answer(instance, closing, "close", "staff:1", now=BASE)
    continuation.answer(instance, changed_mind, "close", "staff:1", now=BASE)
    with instance.session() as s:
        assert s.get(Case, closing).closed_on == BASE.date()
        assert s.execute(select(Takedown.status).where(Takedown.case_id == closing)).scalar() == "on_hold"
    continuation.answer(instance, changed_mind, "continue", "victim", now=BASE + timedelta(days=10))

    assert retention.expire_closed_cases(instance, now=BASE + timedelta(days=89)) == []
    assert retention.expire_closed_cases(instance, now=BASE + timedelta(days=90)) == [closing]
    with instance.session() as s:
        assert s.get(Case, closing) is None
        assert s.execute(select(func.count()).select_from(Takedown).where(Takedown.case_id == closing)).scalar() == 0
        assert s.get(Case, changed_mind) is not None and s.get(Case, changed_mind).closed_on is None
    assert not instance.keystore.exists(closing)                    # crypto-shredded like a withdrawal
    assert instance.keystore.exists(changed_mind)
    assert [e.target for e in audit_actions(instance, "retention.case_expired")] == [f"case:{closing}"]


# --- archived notices and logs ------------------------------------------------------------------------

def test_archived_notices_expire_the_rows_stay(instance):
    case_id = make_case(instance)
    td = make_takedown(instance, case_id, None, "https://tube.example/v/2", status="requested")
    with instance.session() as s:
        old = Notice(takedown_id=td, route="site", state="sent", archived=b"sealed copy", message_id="<a@x>",
                     sent_at=BASE - timedelta(days=1100))
        young = Notice(takedown_id=td, route="host", state="sent", archived=b"sealed copy", message_id="<b@x>",
                       sent_at=BASE - timedelta(days=300))
        waiting = Notice(takedown_id=td, route="registrar", state="uncertain", archived=b"sealed copy",
                         message_id="<c@x>", created_at=BASE - timedelta(days=1100))
        s.add_all([old, young, waiting])
        s.flush()
        ids = old.id, young.id, waiting.id
    assert retention.expire_notice_archives(instance, now=BASE) == 1
    with instance.session() as s:
        old, young, waiting = (s.get(Notice, i) for i in ids)
        assert old.archived is None and old.state == "sent" and old.message_id == "<a@x>"   # history kept
        assert young.archived and waiting.archived                  # too young; not done yet


def test_logs_expire_by_age(instance):
    root = instance.settings.log_dir
    (root / "old").mkdir(parents=True)
    stale, fresh, nested = root / "kesu.log.1", root / "kesu.log", root / "old" / "worker.log"
    for p in (stale, fresh, nested):
        p.write_text("route=/status 200\n")
    for p in (stale, nested):
        t = (BASE - timedelta(days=40)).timestamp()
        os.utime(p, (t, t))
    outside = instance.settings.instance / "not-a-log"
    outside.write_text("x")
    os.utime(outside, (0, 0))
    (root / "link").symlink_to(outside)
    assert retention.expire_logs(instance, now=BASE + timedelta(days=1)) == 2
    assert fresh.exists() and not stale.exists() and not nested.exists() and outside.exists()


# --- the yearly continuation check ---------------------------------------------------------------------

class SMTPSink:
    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        with self.cond:
            self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
            self.cond.notify_all()
        return "250 OK"


@pytest.fixture
def smtp():
    """STARTTLS with a certificate the instance trusts through smtp_ca_file (tests/smtp_helpers.py)."""
    from smtp_helpers import smtp_server
    sink = SMTPSink()
    with smtp_server(sink) as (port, ca_file):
        sink.port, sink.ca_file = port, ca_file
        yield sink


def test_yearly_question_unanswered_puts_the_case_on_hold_and_deletes_nothing(tmp_path, database_url, smtp):
    inst = make_instance(tmp_path / "instance", database_url, smtp_host="127.0.0.1", smtp_port=smtp.port,
                         smtp_ca_file=smtp.ca_file, org_name="NPO Example", org_email="help@example.org", smtp_from="notices@example.org")
    context.set_instance(inst)
    asked = make_case(inst, contact="she@example.net")
    silent = make_case(inst, contact="")                              # left no address
    young = make_case(inst, contact="young@example.net")
    from workers.matching.banks import import_bank
    bank = import_bank(inst, b"md5 cab08b36195edb1a1231d2d09fa450e0\n", "SOME_BANK", actor="cli", notify=False)["case"]
    with inst.session() as s:
        for cid in (asked, silent, bank):
            s.get(Case, cid).created_on = (BASE - timedelta(days=366)).date()
    open_td = make_takedown(inst, asked, None, "https://tube.example/v/9", status="requested")
    gone_td = make_takedown(inst, asked, None, "https://tube.example/v/10", status="removed")
    with inst.session() as s:
        s.add(Schedule(kind="recheck", ref=str(open_td), due_at=BASE, interval_s=86400))
        signals_before = s.execute(select(func.count()).select_from(Signal)).scalar()
        status_before = s.get(Case, asked).status

    got = retention.continuation_checks(inst, now=BASE)
    assert got["asked"] == {asked: "email", silent: "status_page"} and got["held"] == []
    assert len(smtp.messages) == 1
    rcpt, raw = smtp.messages[0]
    assert rcpt == ["she@example.net"]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "NPO Exampleからのお知らせ"
    body = msg.get_content()
    assert "tube.example" not in body and "30日以内" in body          # no URL, no site; the stated delay
    assert continuation.pending_question(inst, asked) and not continuation.pending_question(inst, young)
    assert retention.continuation_checks(inst, now=BASE + timedelta(days=1))["asked"] == {}   # asked once
    assert continuation.answered(inst, young, now=BASE + timedelta(days=1)) is False    # nothing pending: no change

    assert retention.continuation_checks(inst, now=BASE + timedelta(days=29))["held"] == []
    got = retention.continuation_checks(inst, now=BASE + timedelta(days=30))
    assert sorted(got["held"]) == sorted([asked, silent]) and got["staff_told"]
    staff_rcpt, staff_raw = smtp.messages[-1]
    staff_body = email.message_from_bytes(staff_raw, policy=email.policy.default).get_content()
    assert staff_rcpt == ["help@example.org"] and f"case {asked}" in staff_body and "tube.example" not in staff_body
    with inst.session() as s:
        case = s.get(Case, asked)
        assert case.held_on == (BASE + timedelta(days=30)).date()
        assert case.status == status_before                          # the victim's status page is unchanged
        assert s.get(Takedown, open_td).status == "on_hold" and s.get(Takedown, gone_td).status == "removed"
        assert s.execute(select(Schedule).where(Schedule.kind == "recheck", Schedule.ref == str(open_td))).first() is None
        assert s.get(Case, bank).held_on is None and s.get(Case, bank).continuation_asked_on is None
    assert [e.target for e in audit_actions(inst, "case.on_hold")] == sorted([f"case:{asked}", f"case:{silent}"])

    # years later, the daily job still deletes nothing of a case on hold
    retention.run("")
    out = retention.run_all(inst, now=BASE + timedelta(days=1500))
    assert "error" not in str(out)
    with inst.session() as s:
        assert s.get(Case, asked) is not None and s.get(Case, silent) is not None
        assert s.execute(select(func.count()).select_from(Signal)).scalar() == signals_before
    assert inst.keystore.exists(asked)

    # she opens her status page: that is her answer; the work resumes where it stopped
    assert continuation.answered(inst, asked, now=BASE + timedelta(days=40)) is True
    with inst.session() as s:
        case = s.get(Case, asked)
        assert case.held_on is None and case.continuation_asked_on is None
        assert case.continued_on == (BASE + timedelta(days=40)).date()
        assert s.get(Takedown, open_td).status == "requested"
        assert s.execute(select(Schedule).where(Schedule.kind == "recheck", Schedule.ref == str(open_td))).first()
    assert audit_actions(inst, "case.continue")[-1].actor == "victim"
    # and the next question comes a year after her answer, not before
    nxt = BASE + timedelta(days=40 + 364)
    assert asked not in retention.continuation_checks(inst, now=nxt)["asked"]
    assert asked in retention.continuation_checks(inst, now=nxt + timedelta(days=1))["asked"]


def test_periods_are_settings_and_must_be_positive(tmp_path, database_url):
    inst = make_instance(tmp_path / "i", database_url, retention_continuation_days=30, retention_answer_days=7,
                         retention_log_days=0)
    case_id = make_case(inst)
    with inst.session() as s:
        s.get(Case, case_id).created_on = (BASE - timedelta(days=31)).date()
    assert retention.continuation_checks(inst, now=BASE)["asked"] == {case_id: "status_page"}
    assert retention.continuation_checks(inst, now=BASE + timedelta(days=7))["held"] == [case_id]
    with pytest.raises(ValueError, match="retention_log_days"):
        retention.expire_logs(inst, now=BASE)
    with pytest.raises(ValueError):
        continuation.answer(inst, case_id, "delete", "staff:1")
