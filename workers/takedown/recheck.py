"""Follow-up: is it gone yet? Re-check each requested URL until it is, then watch for its return.

Removed means every URL of the item is gone: each media we matched answers 404/410/451 or
serves other bytes (its keyed SHA-256 differs). A page that answers 404 while the image it
showed is still served at its own URL is still up. Some gone, some not: partly removed. A
network error proves nothing and changes nothing, and every outcome carries its reason.
Re-checks leave through `crawl_proxy` like the crawler, so they never come from the
organisation's own address when a proxy is set. Past the route's deadline (the cited regime's
legal deadline, regimes/*.toml; else 2 days under the revenge porn act art. 4 / AV act art. 16, else 7),
a URL still up gets the next route proposed: the regime's escalation (workers/takedown/escalation.py)
where a legal deadline passed, else site -> host -> registrar -> hotline -> lawyer.

Schedules live in the database (workers/schedule.py): a "recheck" row per takedown with an
interval, so a job lost with a flushed Redis simply runs at the next interval; once removed,
the row becomes a "reupload" watch, which re-opens the takedown when the media comes back and
calls the hooks in REUPLOAD_HOOKS (the crawler can register a re-crawl of the site there).
"""
import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from crypto import envelope
from store.models import Case, Domain, Schedule, Takedown, utcnow
from workers.net.fetch import Fetcher, FetchError, Response
from workers.takedown import escalation, predict
from workers.takedown.notify import event

log = logging.getLogger("kesu.recheck")

GONE = (404, 410, 451)
REUPLOAD_EVERY_S = 7 * 24 * 3600
MAX_BYTES = 64 * 1024 * 1024
USER_AGENT = "kesu-recheck/1 (+takedown follow-up)"

# hook(instance, takedown_id, confirmed: bool) when removed material seems to be back.
REUPLOAD_HOOKS: list[Callable] = []


def on_reupload(hook: Callable) -> Callable:
    REUPLOAD_HOOKS.append(hook)
    return hook


def media_key(pepper: bytes, body: bytes) -> str:
    """The crawler's keyed hash of a media body: HMAC(pepper, SHA-256 digest)."""
    return envelope.keyed_name(pepper, hashlib.sha256(body).digest())


def http_fetcher(allow_private: bool = False, timeout: float = 30.0, proxy: str = "") -> Callable[[str], Response]:
    """The real fetcher: kesu's one outbound fetcher (workers.net.fetch), redirects followed,
    every hop through the address guard (chained to `proxy`, the crawl proxy, when set),
    refused addresses an answer-less FetchError."""
    fetcher = Fetcher(allow_private=allow_private, upstream=proxy, timeout=timeout, user_agent=USER_AGENT)

    def fetch(url: str) -> Response:
        return fetcher.get(url, max_bytes=MAX_BYTES)

    return fetch


def _judge(r: Response | None, key: str | None, pepper: bytes) -> str:
    """One URL of the item: gone (404/410/451, or not the matched bytes any more), up, or unknown."""
    if r is None:
        return "unknown"
    if r.status in GONE:
        return "gone"
    if r.status >= 400 or (key and r.truncated):
        return "unknown"                   # an error, or a file too big to read whole, proves nothing
    if key and media_key(pepper, r.body) != key:
        return "gone"                      # changed: not the matched bytes any more
    return "up"


def check(url: str, media: list[dict], pepper: bytes, fetch: Callable[[str], Response]) -> dict:
    """{"outcome": removed|partly_removed|still_up|unknown, "http": int|None, "media": {...}, "why": str}.

    Removed means every URL of the item is gone: each matched media URL answers 404/410/451 or
    serves other bytes. A page that answers 404 while the image it showed is still served at its
    own URL is still up (the notice names that URL too). Without known media, the page decides."""
    try:
        page, page_error = fetch(url), None
    except FetchError as exc:
        page, page_error = None, str(exc)
    http = page.status if page else None
    page_said = f"page answers {page.status}" if page else f"page: no answer ({page_error})"
    if not media:
        verdict = _judge(page, None, pepper)
        outcome = {"gone": "removed", "up": "still_up"}.get(verdict, "unknown")
        why = page_said + ("" if verdict != "up" else " (no media known to compare)")
        return {"outcome": outcome, "http": http, "why": why[:300]}
    counts = {"gone": 0, "up": 0, "unknown": 0}
    reasons = []
    for m in media:
        if page is not None and m["url"] in (url, page.final_url):
            r, error = page, None
        else:
            try:
                r, error = fetch(m["url"]), None
            except FetchError as exc:
                r, error = None, str(exc)
        verdict = _judge(r, m.get("key"), pepper)
        counts[verdict] += 1
        if verdict == "unknown":
            reasons.append(f"media: {error}" if r is None else
                           f"media answers {r.status}" + (" (too big to compare)" if r.status < 400 else ""))
    gone, up, unknown = counts["gone"], counts["up"], counts["unknown"]
    if gone and not up and not unknown:
        outcome, why = "removed", "every matched media is gone or changed"
    elif gone:
        outcome, why = "partly_removed", f"{gone} of {len(media)} media gone"
    elif up:
        outcome, why = "still_up", "matched media still served"
    else:
        outcome, why = "unknown", "media did not answer"
    if page is None and outcome != "still_up":
        outcome = "unknown"                # a page that did not answer proves nothing either way
    why = f"{page_said}; {why}" + (f"; {reasons[0]}" if reasons else "")
    return {"outcome": outcome, "http": http, "media": counts, "why": why[:300]}


def _fetcher_for(instance):
    settings = instance.settings
    return http_fetcher(allow_private=settings.crawl_allow_private, proxy=settings.crawl_proxy)


def _set_schedule(session, kind: str, takedown_id: int, due_at, every_s: int | None) -> None:
    row = session.execute(select(Schedule).where(Schedule.kind == kind, Schedule.ref == str(takedown_id))
                          ).scalars().first()
    if row is None:
        session.add(Schedule(kind=kind, ref=str(takedown_id), due_at=due_at, interval_s=every_s))
    else:
        row.due_at, row.interval_s = due_at, every_s


def _drop_schedule(session, kind: str, takedown_id: int) -> None:
    row = session.execute(select(Schedule).where(Schedule.kind == kind, Schedule.ref == str(takedown_id))
                          ).scalars().first()
    if row is not None:
        session.delete(row)


def _check_takedown(instance, takedown_id: int, fetch) -> tuple[dict, list] | tuple[None, None]:
    """Fetch and judge one takedown's URL: (result, its matched media), or (None, None) and its
    schedules dropped when the takedown is gone (withdrawn)."""
    with instance.session() as s:
        td = s.get(Takedown, takedown_id)
        if td is None:                     # withdrawn: its schedules go too
            for kind in ("recheck", "reupload", "deadline"):
                _drop_schedule(s, kind, takedown_id)
            return None, None
        url, media = td.url, list(td.media or [])
    return check(url, media, instance.pepper, fetch or _fetcher_for(instance)), media


def run_check(instance, takedown_id: int, fetch=None, now=None) -> dict:
    """Check one takedown now and record the outcome (the job `recheck` calls this)."""
    now = now or utcnow()
    result, media = _check_takedown(instance, takedown_id, fetch)
    if result is None:
        return {"outcome": "missing"}
    domain_id = None
    with instance.session() as s:
        td = s.get(Takedown, takedown_id, with_for_update=True)
        if td is None:
            return {"outcome": "missing"}
        td.checked_at = now
        before = td.status
        # on hold (staff, or retention waiting for her answer): a check informs, never decides
        outcome = result["outcome"] if before != "on_hold" else None
        if outcome == "removed":
            td.status = "removed"
            td.resolved_at = td.resolved_at or now
            td.proposal = None
            _drop_schedule(s, "recheck", td.id)
            _drop_schedule(s, "deadline", td.id)      # gone before its deadline: nothing to check at it
            _set_schedule(s, "reupload", td.id, now + timedelta(seconds=REUPLOAD_EVERY_S), REUPLOAD_EVERY_S)
        elif outcome in ("partly_removed", "still_up"):
            overdue = td.deadline_at is not None and now >= td.deadline_at
            if outcome == "partly_removed":
                td.status = "partly_removed"
            elif overdue or before in ("still_up",):
                td.status = "still_up"
            if overdue and td.proposal is None:
                # past a legal deadline: the regime's escalation (regulator, delisting, host...) first
                legal = escalation.first_open(s, td) if td.regime else None
                if legal is not None:
                    td.proposal = legal
                    event(s, td.id, "proposal", "worker", route=legal, after=td.route, regime=td.regime,
                          overdue_h=round(escalation.overdue_hours(td.deadline_at, now), 1))
                else:
                    case = s.get(Case, td.case_id)
                    domain = s.get(Domain, td.domain_id) if td.domain_id else None
                    steps = predict.recommend_routes(domain, case.category if case else None,
                                                     domain.prediction if domain else None)
                    td.proposal = predict.next_route(steps, td.route) or "lawyer"
                    event(s, td.id, "proposal", "worker", route=td.proposal, after=td.route)
        td.updated_at = now if td.status != before else td.updated_at
        event(s, td.id, "check", "worker", outcome=result["outcome"], http=result.get("http"), why=result["why"],
              media=result.get("media"), status=td.status)
        domain_id = td.domain_id if td.status != before else None
    if domain_id:
        predict.update_domain(instance, domain_id)
    result["status"] = td.status
    return result


def run_watch(instance, takedown_id: int, fetch=None, now=None) -> dict:
    """After removal: is it back? Media that matches again re-opens the takedown."""
    now = now or utcnow()
    result, media = _check_takedown(instance, takedown_id, fetch)
    if result is None:
        return {"outcome": "missing"}
    back = result["outcome"] in ("still_up", "partly_removed")
    confirmed = back and bool(media) and result.get("media", {}).get("up", 0) > 0
    with instance.session() as s:
        td = s.get(Takedown, takedown_id, with_for_update=True)
        if td is None:                     # withdrawn while it was being fetched
            return {"outcome": "missing"}
        td.checked_at = now
        if confirmed:
            td.status, td.resolved_at, td.updated_at = "still_up", None, now
            td.deadline_at = now
            _drop_schedule(s, "reupload", td.id)
            _set_schedule(s, "recheck", td.id, now + timedelta(days=1), 24 * 3600)
        event(s, td.id, "reupload" if back else "watch", "worker", outcome=result["outcome"], confirmed=confirmed,
              http=result.get("http"))
        domain_id = td.domain_id
    if back:
        for hook in REUPLOAD_HOOKS:
            try:
                hook(instance, takedown_id, confirmed)
            except Exception:
                log.exception("re-upload hook failed")
        if confirmed and domain_id:
            predict.update_domain(instance, domain_id)
    result["back"], result["confirmed"] = back, confirmed
    return result


def recheck(ref: str) -> str:
    """Scheduled job (kind "recheck", ref = takedown id)."""
    from workers.system.context import instance as current
    return run_check(current(), int(ref))["outcome"]


def watch(ref: str) -> str:
    """Scheduled job (kind "reupload", ref = takedown id)."""
    from workers.system.context import instance as current
    return run_watch(current(), int(ref))["outcome"]

