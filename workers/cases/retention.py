"""Retention: what expires, when, and what happens to a case nobody answers for.

One scheduled job (`run`, kind "retention", daily) does five things, each also callable on
its own with `now=` (tests move the clock instead of sleeping):

* **Unmatched capture signals** (`expire_unmatched`): a Media row that no case matched keeps
  only its URL and its signals sealed to the org key (DESIGN §3), so that a later case can be
  matched against it. After `retention_unmatched_days` (default 180) from its capture it is
  deleted, and so is its Capture once nothing in it matched (page URL, status, server IP,
  redirects, and any blob it held). Media that matched any case (new, confirmed, rejected
  or unsure) stay: they are evidence, and a withdrawal deletes them with the case.
* **Closed cases** (`expire_closed_cases`): a case is closed only on the victim's word (her
  answer "close" to the yearly question, or staff recording that she asked; withdrawal on
  the status page is immediate and needs no waiting). A closed case is withdrawn completely
  (store.cases.withdraw: rows, case key, evidence only it needs; the yearly tallies stay)
  `retention_closed_case_days` (default 90) after it was closed, so the lawyer can still
  export evidence and she can change her mind ("continue" re-opens it) in between.
* **Archived copies of notices** (`expire_notice_archives`): the encrypted copy of what was
  sent is dropped `retention_notice_archive_days` (default 1095, three years) after sending,
  for notices that are done (sent, form, failed). The Notice row stays (route, recipient,
  time, state, Message-ID): the history of the takedown is kept without the text.
* **Logs** (`expire_logs`): files in settings.log_dir older (by modification time) than
  `retention_log_days` (default 30) are deleted.
* **The yearly continuation check** (`continuation_checks`), the stated policy:
    1. Every `retention_continuation_days` (default 365) after a case was opened or last
       confirmed, we ask her whether we should go on: by e-mail when she left an address
       (a neutral message: no URL, no site, no content), otherwise the question waits on
       her status page (the intake shows `pending_question()`; any visit there with her
       case number and passphrase counts as "go on", see `answered()`).
    2. No answer within `retention_answer_days` (default 30): the case goes **on hold**.
       Its open takedowns (ongoing, requested, still up, partly removed) are set to
       "on_hold" and their re-checks stop; staff are told (an e-mail to the organisation's
       address when SMTP is set, the audit log, and the list on the manual-work page).
       Case.status, which the victim's status page shows (DESIGN §6.3), is left as it was;
       on hold is `Case.held_on`.
    3. **Nothing is deleted for lack of an answer.** Signals, matches, evidence and
       takedowns of a case on hold stay; the matcher still indexes it, so a re-upload is
       still found and shown in review. Deleting her case needs her word: withdrawal, or
       "close" (then the closed-case period above).
    4. An answer ("continue", recorded by her visit or by staff from her reply) takes the
       case off hold, puts its takedowns back where they were and re-checks them at once.
  Imported hash banks (Case.bank) are not victims' cases: they are never asked, held or
  expired here.

Settings (read from settings.extra, so config.toml or overrides set them):
retention_unmatched_days, retention_closed_case_days, retention_notice_archive_days,
retention_log_days, retention_continuation_days, retention_answer_days.

Nothing here logs or audits content: counts and internal ids only.
"""
from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import exists, or_, select

from store import audit
from store.continuation import ACTOR, HOLD_REASON, hold_takedowns
from store.models import Capture, Case, Match, Media, Notice, utcnow

log = logging.getLogger("kesu.retention")

DONE_NOTICE = ("sent", "form", "failed")
BATCH = 500


def days(instance, name: str) -> int:
    """A retention period in days (Settings: KESU_RETENTION_* or config.toml)."""
    value = int(getattr(instance.settings, name))
    if value < 1:
        raise ValueError(f"{name} must be at least 1 day")
    return value


def _now(now: datetime | None) -> datetime:
    return now or utcnow()


# --- 1. unmatched capture signals ----------------------------------------------------------

def expire_unmatched(instance, now: datetime | None = None) -> dict:
    """Delete Media that matched nothing and Captures in which nothing matched, once older than
    retention_unmatched_days. Returns the counts."""
    cutoff = _now(now) - timedelta(days=days(instance, "retention_unmatched_days"))
    matched = exists(select(Match.id).where(Match.media_id == Media.id))
    media_gone = captures_gone = 0
    blobs: list[str] = []
    while True:
        with instance.session() as s:
            ids = list(s.execute(select(Media.id).join(Capture, Capture.id == Media.capture_id)
                                 .where(Capture.captured_at < cutoff, Capture.status != "pending", ~matched)
                                 .order_by(Media.id).limit(BATCH)).scalars())
            for media in s.execute(select(Media).where(Media.id.in_(ids))).scalars():
                if media.blob:
                    blobs.append(media.blob)
                s.delete(media)
            media_gone += len(ids)
        if len(ids) < BATCH:
            break
    any_match = exists(select(Match.id).join(Media, Media.id == Match.media_id)
                       .where(Media.capture_id == Capture.id))
    while True:
        with instance.session() as s:
            rows = s.execute(select(Capture).where(Capture.captured_at < cutoff, Capture.status != "pending",
                                                   ~any_match).order_by(Capture.id).limit(BATCH)).scalars().all()
            for capture in rows:
                for artifact in (capture.evidence or {}).get("artifacts", {}).values():
                    blobs.append(artifact["blob"])
                for media in capture.media:
                    if media.blob:
                        blobs.append(media.blob)
                s.delete(capture)
            captures_gone += len(rows)
        if len(rows) < BATCH:
            break
    for name in blobs:
        try:
            instance.blobs.delete(name)
        except (ValueError, OSError):
            pass
    if media_gone or captures_gone:
        with instance.session() as s:
            audit.record(s, ACTOR, "retention.unmatched", "captures", media=media_gone, captures=captures_gone)
    return {"media": media_gone, "captures": captures_gone}


# --- 2. closed cases -------------------------------------------------------------------------

def expire_closed_cases(instance, now: datetime | None = None) -> list[int]:
    """Withdraw (completely) cases closed on the victim's word longer ago than the period."""
    from store.cases import withdraw
    cutoff = _now(now).date() - timedelta(days=days(instance, "retention_closed_case_days"))
    with instance.session() as s:
        ids = list(s.execute(select(Case.id).where(Case.closed_on.is_not(None), Case.closed_on <= cutoff,
                                                   Case.bank.is_(None), Case.status != "withdrawn")
                             .order_by(Case.id)).scalars())
    for case_id in ids:
        with instance.session() as s:
            audit.record(s, ACTOR, "retention.case_expired", f"case:{case_id}")
        withdraw(instance, case_id)
    return ids


# --- 3. archived notices ---------------------------------------------------------------------

def expire_notice_archives(instance, now: datetime | None = None) -> int:
    """Drop the encrypted copy of notices that are done and older than the period."""
    cutoff = _now(now) - timedelta(days=days(instance, "retention_notice_archive_days"))
    with instance.session() as s:
        rows = s.execute(select(Notice).where(Notice.archived.is_not(None), Notice.state.in_(DONE_NOTICE),
                                              or_(Notice.sent_at < cutoff,
                                                  Notice.sent_at.is_(None) & (Notice.created_at < cutoff)))
                         ).scalars().all()
        for notice in rows:
            notice.archived = None
        if rows:
            audit.record(s, ACTOR, "retention.notice_archives", "notices", count=len(rows),
                         notices=[n.id for n in rows][:1000])
        return len(rows)


# --- 4. logs ------------------------------------------------------------------------------------

def expire_logs(instance, now: datetime | None = None) -> int:
    """Delete files in the log folder last written before the period (symlinks are left alone)."""
    root = instance.settings.log_dir
    if not root.is_dir():
        return 0
    cutoff = (_now(now) - timedelta(days=days(instance, "retention_log_days"))).replace(tzinfo=timezone.utc)
    gone = 0
    for path in sorted(root.rglob("*")):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            if path.stat().st_mtime < cutoff.timestamp():
                path.unlink()
                gone += 1
        except OSError as exc:
            log.warning("could not expire a log file: %s", type(exc).__name__)
    if gone:
        with instance.session() as s:
            audit.record(s, ACTOR, "retention.logs", "logs", count=gone)
    return gone


# --- 5. the yearly continuation check --------------------------------------------------------------

QUESTION_TEXT = {
    "ja": ("{org}からのお知らせ",
           "{org}です。\n\nご相談いただいてから1年がたちました。このまま見守りと削除の依頼を続けてよいか、"
           "お知らせください。\n\n"
           "続ける場合: ケース番号とパスフレーズで状況の確認ページを開いてください（それだけで「続ける」と伝わります）。"
           "このメールへの返信でもかまいません。\n"
           "すべて消してほしい場合: 状況の確認ページの「ケースを削除する」を使ってください。\n\n"
           "{answer_days}日以内にお返事がない場合は、作業を一時停止します。あなたの言葉なしに、ケースを消すことはありません。\n\n"
           "このメールに心当たりがない場合は、破棄してください。\n\n{org}\n{contact}\n"),
    "en": ("A message from {org}",
           "This is {org}.\n\nIt has been a year since you asked us for help. Please tell us whether we should go on "
           "watching and asking for removals.\n\n"
           "To go on: open the status page with your case number and passphrase (that alone tells us), or reply "
           "to this message.\n"
           "To have everything deleted: use \"Delete my case\" on the status page.\n\n"
           "If we hear nothing within {answer_days} days, we pause our work. We never delete your case without "
           "your word.\n\nIf this message means nothing to you, please delete it.\n\n{org}\n{contact}\n"),
}
STAFF_TEXT = ("kesu: {n} case(s) on hold",
              "No answer came to the yearly question within {answer_days} days, so these cases are on hold "
              "(nothing was deleted):\n\n{lines}\n\nOpen the back office (Manual work) to record an answer.\n"
              "ケース（内部ID）{ids} は年次の確認に{answer_days}日以内の返答がなかったため一時停止しました（削除はしていません）。\n")


def _due_to_ask(s, today, every: int) -> list[Case]:
    rows = s.execute(select(Case).where(Case.bank.is_(None), Case.status != "withdrawn", Case.category.is_not(None),
                                        Case.closed_on.is_(None), Case.held_on.is_(None),
                                        Case.continuation_asked_on.is_(None))).scalars().all()
    return [c for c in rows if (c.continued_on or c.created_on) + timedelta(days=every) <= today]


def _send_question(instance, case: Case, answer_days: int) -> str:
    """E-mail the question when she left an address and SMTP is set: "email"; else "status_page"."""
    from workers.takedown import notify
    st = instance.settings
    if not st.smtp_host:
        return "status_page"
    try:
        to = notify.victim_contact(instance, case)
    except Exception:            # keys locked or details unreadable: the status page still asks
        to = None
    if not to:
        return "status_page"
    lang = case.language if case.language in QUESTION_TEXT else "ja"
    subject, body = QUESTION_TEXT[lang]
    org = st.org_name
    contact = st.org_phone or st.org_email or ""
    mid = f"<kesu.continue.{secrets.token_hex(8)}@{notify.mail_domain(instance)}>"
    msg = notify.message(instance, to, subject.format(org=org),
                          body.format(org=org, contact=contact, answer_days=answer_days), mid, auto=True)
    notify.send_raw(instance, st.smtp_from or st.org_email, [to], msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
    return "email"


def _tell_staff(instance, held: list[int], answer_days: int) -> bool:
    from workers.takedown import notify
    st = instance.settings
    if not held or not st.smtp_host or not st.org_email:
        return False
    subject, body = STAFF_TEXT
    lines = "\n".join(f"- case {i}" for i in held)
    ids = ", ".join(str(i) for i in held)
    mid = f"<kesu.hold.{held[0]}.{utcnow():%Y%m%d%H%M%S}@{notify.mail_domain(instance)}>"
    msg = notify.message(instance, st.org_email, subject.format(n=len(held)),
                          body.format(answer_days=answer_days, lines=lines, ids=ids), mid, auto=True)
    try:
        notify.send_raw(instance, st.smtp_from or st.org_email, [st.org_email],
                         msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
        return True
    except Exception as exc:
        log.warning("could not tell staff about held cases: %s", type(exc).__name__)
        return False






def continuation_checks(instance, now: datetime | None = None) -> dict:
    """Ask the yearly question where it is due; hold cases whose answer is overdue."""
    now = _now(now)
    today = now.date()
    every = days(instance, "retention_continuation_days")
    answer_days = days(instance, "retention_answer_days")
    asked: dict[int, str] = {}
    with instance.session() as s:
        due = [(c.id, c) for c in _due_to_ask(s, today, every)]
    for case_id, case in due:
        try:
            channel = _send_question(instance, case, answer_days)
        except Exception as exc:        # SMTP down: ask again on the next run, nothing recorded
            log.warning("yearly question for case %s not sent: %s", case_id, type(exc).__name__)
            continue
        with instance.session() as s:
            row = s.get(Case, case_id)
            if row is None or row.continuation_asked_on is not None:
                continue
            row.continuation_asked_on = today
            audit.record(s, ACTOR, "case.continuation_ask", f"case:{case_id}", channel=channel)
        asked[case_id] = channel
    held: list[int] = []
    with instance.session() as s:
        rows = s.execute(select(Case).where(Case.bank.is_(None), Case.status != "withdrawn",
                                            Case.continuation_asked_on.is_not(None), Case.held_on.is_(None),
                                            Case.closed_on.is_(None))).scalars().all()
        for case in rows:
            if case.continued_on is not None and case.continued_on >= case.continuation_asked_on:
                continue
            if case.continuation_asked_on + timedelta(days=answer_days) > today:
                continue
            case.held_on = today
            n = hold_takedowns(s, case.id, HOLD_REASON, now)
            audit.record(s, ACTOR, "case.on_hold", f"case:{case.id}", takedowns=n,
                         asked_on=case.continuation_asked_on.isoformat())
            held.append(case.id)
    told = _tell_staff(instance, held, answer_days)
    if held:
        log.info("%d case(s) put on hold after an unanswered yearly question", len(held))
    return {"asked": asked, "held": held, "staff_told": told}








# --- the scheduled job ------------------------------------------------------------------------------

def run_all(instance, now: datetime | None = None) -> dict:
    now = _now(now)
    out = {}
    for name, fn in (("continuation", continuation_checks), ("closed_cases", expire_closed_cases),
                     ("unmatched", expire_unmatched), ("notice_archives", expire_notice_archives),
                     ("logs", expire_logs)):
        try:
            out[name] = fn(instance, now)
        except Exception:          # one part failing must not stop the others; no content logged
            log.exception("retention step %s failed", name)
            out[name] = {"error": True}
    return out


def run(_ref: str = "") -> dict:
    """Scheduled job (kind "retention", daily)."""
    from workers.system.context import instance
    return run_all(instance())
