"""Manual work on a case: staff add URLs they were told about or found, and record the
victim's answer to the yearly question (store/continuation.py).

Adding URLs (`add_urls`): one URL or a pasted list (one per line, or separated by spaces or
commas; at most MAX_URLS). Each http(s) URL, normalised as the crawler does, becomes a
Takedown row for the case at once (idempotent per case and URL: adding it again changes
nothing) and a crawl job with the case's id and depth 0 (the page alone). The capture is
real (Chromium, workers.capture.crawl), and the matcher sees everything the page loaded, so matches
land in the review queue and evidence is kept as for any crawl. The job goes to the `crawl`
queue when a crawl worker listens, else it runs in a thread of this process. `link_media`
then records on each manual takedown the media of its capture that matched this case (URL
and keyed hash, for the re-check); it runs after an in-process capture and whenever the case
page is opened. Every addition is audited (ids and counts, never a URL in the audit detail).
"""
from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import select

from backoffice import current_instance, login_required
from store import audit
from store.models import (
    Capture,
    Case,
    CrawlJob,
    Match,
    Media,
    Takedown,
    TakedownEvent,
    utcnow,
)

log = logging.getLogger("kesu.manual")

bp = Blueprint("manual", __name__, url_prefix="/manual")
MAX_URLS = 100
MAX_URL_LENGTH = 2048
_SPLIT = re.compile(r"[\s,、]+")


# --- the functions ----------------------------------------------------------------------------

def parse_urls(text: str) -> tuple[list[str], list[str]]:
    """(good URLs normalised and distinct, in order; bad entries) from pasted text."""
    from workers.capture.crawl import normalise
    good, bad, seen = [], [], set()
    for raw in _SPLIT.split(text or ""):
        raw = raw.strip().strip("<>\"'")
        if not raw:
            continue
        try:
            parts = urlsplit(raw)
            ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and len(raw) <= MAX_URL_LENGTH
        except ValueError:
            ok = False
        if not ok:
            bad.append(raw[:200])
            continue
        url = normalise(raw)
        if url not in seen:
            seen.add(url)
            good.append(url)
    return good, bad


def add_urls(instance, case_id: int, text: str, actor: str) -> dict:
    """Takedown rows (and crawl jobs for the new ones) for each URL in text.

    Returns {"added": [(url, takedown_id, job_id)], "known": [(url, takedown_id)], "bad": [...]}.
    """
    from store.urls import domain_id
    from workers.capture.crawl import create_job
    urls, bad = parse_urls(text)
    if len(urls) > MAX_URLS:
        raise ValueError(f"at most {MAX_URLS} URLs at once")
    with instance.session() as s:
        case = s.get(Case, case_id)
        if case is None or case.status == "withdrawn":
            raise LookupError(f"no case {case_id}")
    added, known = [], []
    for url in urls:
        with instance.session() as s:
            td = s.execute(select(Takedown).where(Takedown.case_id == case_id, Takedown.url == url)).scalars().first()
            if td is not None:
                known.append((url, td.id))
                continue
        job_id = create_job(instance, url, depth=0, requested_by=actor, case_id=case_id)
        with instance.session() as s:
            td = s.execute(select(Takedown).where(Takedown.case_id == case_id, Takedown.url == url)).scalars().first()
            if td is not None:            # added meanwhile by another click: keep that one
                known.append((url, td.id))
                continue
            td = Takedown(case_id=case_id, url=url, domain_id=domain_id(s, url), status="ongoing")
            s.add(td)
            s.flush()
            s.add(TakedownEvent(takedown_id=td.id, kind="manual", actor=actor, detail={"job": job_id}))
            audit.record(s, actor, "takedown.create", f"takedown:{td.id}", case=case_id, job=job_id, manual=True)
            added.append((url, td.id, job_id))
    with instance.session() as s:
        audit.record(s, actor, "manual.add", f"case:{case_id}", added=len(added), known=len(known), bad=len(bad))
    return {"added": added, "known": known, "bad": bad}


def capture(instance, job_ids: list[int], driver=None) -> None:
    """Run the crawl jobs here (real capture and matching), then link what matched."""
    from workers.capture.crawl import crawl
    cases = set()
    for job_id in job_ids:
        try:
            crawl(instance, job_id, driver=driver)
        except Exception as exc:          # recorded on the job; the other URLs still go on
            log.warning("manual capture of job %s failed: %s", job_id, type(exc).__name__)
        with instance.session() as s:
            job = s.get(CrawlJob, job_id)
            if job is not None and job.case_id:
                cases.add(job.case_id)
    for case_id in cases:
        link_media(instance, case_id)


def start(instance, job_ids: list[int]) -> str:
    """Hand the jobs to the crawl workers ("queued"), or capture them in a thread ("here")."""
    if not job_ids:
        return "none"
    from workers.system.queue import workers_listening
    if workers_listening(instance.settings, "crawl") > 0:
        from workers import jobs
        if all([jobs.enqueue(instance.settings, "crawl", job_id, job_id=f"kesu-crawl-{job_id}",
                             job_timeout=instance.settings.crawl_max_seconds + 300) for job_id in job_ids]):
            return "queued"
    threading.Thread(target=capture, args=(instance, list(job_ids)), daemon=True, name="kesu-manual").start()
    return "here"


def manual_takedowns(session, case_id: int) -> list[tuple[Takedown, int | None]]:
    """(takedown, crawl job id) of the case's manually added takedowns, newest first."""
    rows = session.execute(select(Takedown, TakedownEvent.detail).join(
        TakedownEvent, (TakedownEvent.takedown_id == Takedown.id) & (TakedownEvent.kind == "manual"))
        .where(Takedown.case_id == case_id).order_by(Takedown.id.desc())).all()
    return [(td, (detail or {}).get("job")) for td, detail in rows]


def link_media(instance, case_id: int) -> int:
    """Record on each manual takedown the media of its capture that matched this case. Idempotent."""
    changed = 0
    with instance.session() as s:
        for td, job_id in manual_takedowns(s, case_id):
            if not job_id:
                continue
            rows = s.execute(select(Media.url, Media.sha256_key).join(Capture, Capture.id == Media.capture_id)
                             .join(Match, Match.media_id == Media.id)
                             .where(Capture.job_id == job_id, Capture.status != "pending",
                                    Match.case_id == case_id).distinct()).all()
            have = {m.get("url") for m in (td.media or [])}
            new = [{"url": url, "key": key} for url, key in rows if url not in have]
            if new:
                td.media = [*(td.media or []), *new]
                td.updated_at = utcnow()
                changed += 1
    return changed


def case_rows(instance, case_id: int) -> list[dict]:
    """What the case page shows for each manual takedown: URL, status, capture state, matches."""
    out = []
    with instance.session() as s:
        for td, job_id in manual_takedowns(s, case_id):
            job = s.get(CrawlJob, job_id) if job_id else None
            n = 0
            if job_id:
                n = len(s.execute(select(Match.id).join(Media, Media.id == Match.media_id)
                                  .join(Capture, Capture.id == Media.capture_id)
                                  .where(Capture.job_id == job_id, Match.case_id == case_id)).all())
            out.append({"takedown": td.id, "url": td.url, "status": td.status,
                        "capture": job.status if job else "—", "error": (job.error or "")[:200] if job else "",
                        "matches": n, "media": len(td.media or [])})
    return out


# --- the pages ---------------------------------------------------------------------------------

def _actor() -> str:
    return f"staff:{g.staff.id}"


def _retention_lists(instance) -> tuple[list, list]:
    with instance.session() as s:
        waiting = s.execute(select(Case.id, Case.continuation_asked_on).where(
            Case.bank.is_(None), Case.continuation_asked_on.is_not(None), Case.held_on.is_(None),
            Case.closed_on.is_(None), Case.status != "withdrawn").order_by(Case.continuation_asked_on)).all()
        held = s.execute(select(Case.id, Case.held_on).where(
            Case.bank.is_(None), Case.held_on.is_not(None), Case.status != "withdrawn")
            .order_by(Case.held_on)).all()
    return waiting, held


@bp.route("/")
@login_required("staff")
def index():
    instance = current_instance()
    case_id = request.args.get("case", type=int)
    if case_id:
        return redirect(url_for("manual.case", case_id=case_id))
    waiting, held = _retention_lists(instance)
    return render_template("backoffice/manual.html", waiting=waiting, held=held)


@bp.route("/cases/<int:case_id>")
@login_required("staff")
def case(case_id):
    instance = current_instance()
    with instance.session() as s:
        row = s.get(Case, case_id)
        if row is None or row.status == "withdrawn":
            abort(404)
        info = {"id": row.id, "category": row.category, "status": row.status, "bank": row.bank,
                "held_on": row.held_on, "asked_on": row.continuation_asked_on, "closed_on": row.closed_on}
        audit.record(s, _actor(), "manual.view", f"case:{case_id}")
    link_media(instance, case_id)
    return render_template("backoffice/manual_case.html", case=info, rows=case_rows(instance, case_id),
                           max_urls=MAX_URLS)


@bp.route("/cases/<int:case_id>/urls", methods=["POST"])
@login_required("staff")
def add(case_id):
    instance = current_instance()
    try:
        result = add_urls(instance, case_id, request.form.get("urls", ""), _actor())
    except LookupError:
        abort(404)
    except ValueError as exc:
        flash(_("Nothing added: %(reason)s", reason=str(exc)), "error")
        return redirect(url_for("manual.case", case_id=case_id))
    how = start(instance, [job for _url, _td, job in result["added"]])
    if result["added"]:
        flash(_("%(n)d URL(s) added; their pages are being captured and matched.", n=len(result["added"])), "ok")
    if result["known"]:
        flash(_("%(n)d URL(s) were already on this case.", n=len(result["known"])), "ok")
    if result["bad"]:
        flash(_("Not URLs (skipped): %(list)s", list=", ".join(result["bad"][:10])), "error")
    if how == "here":
        log.info("manual captures run in the back office process (no crawl worker listening)")
    return redirect(url_for("manual.case", case_id=case_id))


@bp.route("/cases/<int:case_id>/answer", methods=["POST"])
@login_required("staff")
def answer(case_id):
    from store import continuation
    instance = current_instance()
    reply = request.form.get("answer", "")
    if reply not in continuation.ANSWERS:
        abort(400)
    try:
        continuation.answer(instance, case_id, reply, _actor())
    except LookupError:
        abort(404)
    flash(_("The answer is recorded.") if reply == "continue" else
          _("The case is closed; it will be deleted after the closed-case period."), "ok")
    return redirect(url_for("manual.case", case_id=case_id))
