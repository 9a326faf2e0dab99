"""The review queue: matches the crawler found, most confident first, for staff to decide.

One row is one (case, media) pair with every kind of evidence that agrees on it (PDQ, file
hash, vPDQ, face). The found item is shown beside the case's own labels (what the victim
typed), never beside her images: we have none. Thumbnails come from the evidence kept for
matched media, decrypted here in memory, and are blurred until clicked (staff wellbeing);
media without kept bytes (minor category, videos, or nothing kept) show a neutral
placeholder. Confirming a pair creates the Takedown for its page (with the media URL), and
every view, thumbnail and decision is written to the audit log (ids only, never content).
Decisions also go to Review rows and train the confidence model (workers.matching.matcher.retrain).
"""
import io
import math

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import func, select

from backoffice import current_instance, login_required
from store import audit, casekeys
from store.cases import mark_found
from store.models import Capture, Case, Item, Match, Media, Review, Takedown, utcnow
from store.urls import domain_id
from workers.matching.confidence import FLAG_AT

bp = Blueprint("review", __name__, url_prefix="/review")

PAGE_SIZE = 20
DECISIONS = {"confirm": "confirmed", "reject": "rejected", "unsure": "unsure"}
VIEWS = {"open": ("new", "unsure"), "new": ("new",), "unsure": ("unsure",), "confirmed": ("confirmed",),
         "rejected": ("rejected",)}
THUMB_SIDE = 320

PLACEHOLDER = ('<svg xmlns="http://www.w3.org/2000/svg" width="160" height="120" viewBox="0 0 160 120">'
               '<rect width="160" height="120" fill="#e8e6e1"/>'
               '<path d="M50 85 L72 58 L88 76 L100 64 L118 85 Z" fill="#b9b5ad"/>'
               '<circle cx="105" cy="45" r="8" fill="#b9b5ad"/></svg>')


def _actor() -> str:
    return f"staff:{g.staff.id}"



# --- the queue ---------------------------------------------------------------------------------

def pdq_reason(distance: float, evidence: dict) -> str:
    """What a PDQ match means for a person: "same picture, flipped" rather than "4 bits (flipy / full)".
    The crawled picture's orientation (query_variant: the dihedral variants of workers.signals.images)
    and the registered variant (full, trimmed, crop-W:H) say how it was changed."""
    d = int(distance)
    how = (_("same picture") if d <= 8 else _("very similar picture") if d <= 20
           else _("similar picture (look closely)"))
    turned = {"rot90": _("turned a quarter"), "rot270": _("turned a quarter"), "rot180": _("turned upside down"),
              "flipx": _("flipped upside down"), "flipy": _("flipped"), "flipplus": _("flipped diagonally"),
              "flipminus": _("flipped diagonally")}.get(evidence.get("query_variant") or "")
    variant = evidence.get("variant") or ""
    cut = (_("its border cut off") if variant == "trimmed" else
           _("cropped to %(shape)s", shape=variant[5:]) if variant.startswith("crop-") else None)
    from flask_babel import get_locale
    return ("、" if str(get_locale()) == "ja" else ", ").join(x for x in (how, turned, cut) if x)


def face_reason(evidence: dict) -> str | None:
    """The plain reason of a face candidate: where its distance stands among other people's
    crawled faces (workers.matching.index.FaceCohort), or None while the cohort is too small."""
    closer, n = evidence.get("face_closer"), evidence.get("cohort")
    if closer is None or not n:
        return None
    if closer >= 1.0:
        return _("closer than all %(n)s other faces seen", n=f"{int(n):,}")
    pct = math.floor(float(closer) * 1000) / 10          # never rounded up to a better figure
    return _("closer than %(pct)s %% of other faces seen (%(n)s)", pct=f"{pct:.1f}", n=f"{int(n):,}")


def queue_page(instance, view: str = "open", page: int = 1, case: int | None = None) -> tuple[list[dict], int]:
    """One page of (case, media) pairs in the given states, most confident first; and the total.
    With `case`: that case's candidates only (its face candidates best first)."""
    states = VIEWS.get(view, VIEWS["open"])
    with instance.session() as s:
        pairs_q = (select(Match.case_id, Match.media_id, func.max(Match.confidence).label("p"))
                   .where(Match.state.in_(states)).group_by(Match.case_id, Match.media_id))
        if case is not None:
            pairs_q = pairs_q.where(Match.case_id == case)
        total = s.execute(select(func.count()).select_from(pairs_q.subquery())).scalar() or 0
        pairs = s.execute(pairs_q.order_by(func.max(Match.confidence).desc(), Match.media_id.desc())
                          .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
        rows = []
        for case_id, media_id, p in pairs:
            matches = s.execute(select(Match).where(Match.case_id == case_id, Match.media_id == media_id)
                                .order_by(Match.kind)).scalars().all()
            media = s.get(Media, media_id)
            capture = s.get(Capture, media.capture_id) if media else None
            case = s.get(Case, case_id)
            items = sorted({(m.evidence or {}).get("item") for m in matches} - {None})
            item_kinds = dict(s.execute(select(Item.item, Item.kind).where(Item.case_id == case_id,
                                                                          Item.item.in_(items))).all()) if items else {}
            rows.append({
                "key": f"{case_id}:{media_id}", "case": case_id, "media": media_id,
                "category": case.category if case else None,
                "confidence": float(p or 0), "flagged": float(p or 0) >= FLAG_AT,
                "kinds": [{"kind": m.kind, "distance": m.distance, "id": m.id, "state": m.state,
                           "evidence": m.evidence or {},
                           "item_kind": item_kinds.get((m.evidence or {}).get("item")),
                           "reason": (face_reason(m.evidence or {}) if m.kind == "face" else
                                      pdq_reason(m.distance, m.evidence or {}) if m.kind == "pdq" else None)}
                          for m in matches],
                "state": matches[0].state if len({m.state for m in matches}) == 1 else "mixed",
                "matched_items": items,
                "url": media.url if media else "", "mime": media.mime if media else "",
                "page": (capture.final_url or capture.url) if capture else "",
                "captured_at": capture.captured_at if capture else None,
                "has_bytes": bool(media and media.blob),
            })
    return rows, int(total)


def _labels(instance, case_ids) -> dict:
    """Each case's item labels (decrypted with the case key, in memory only)."""
    from workers.cases.decrypt import item_labels
    out = {}
    for case_id in case_ids:
        try:
            out[case_id] = item_labels(instance, case_id)
        except Exception:       # a missing or destroyed key: show ids only
            out[case_id] = {}
    return out


@bp.route("/")
@login_required("staff")
def queue():
    instance = current_instance()
    view = request.args.get("view", "open")
    if view not in VIEWS:
        view = "open"
    page = max(1, request.args.get("page", 1, type=int) or 1)
    case = request.args.get("case", type=int)
    rows, total = queue_page(instance, view, page, case)
    labels = _labels(instance, {r["case"] for r in rows})
    with instance.session() as s:
        audit.record(s, _actor(), "review.view", "review", view=view, page=page,
                     pairs=[r["key"] for r in rows])
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    return render_template("backoffice/review.html", new_takedowns=session.pop("new_takedowns", []), rows=rows,
                           labels=labels, view=view, views=list(VIEWS),
                           page=page, pages=pages, total=total, flag_at=FLAG_AT, case=case)


# --- thumbnails ----------------------------------------------------------------------------------

def thumbnail_bytes(instance, media_id: int) -> bytes | None:
    """A small JPEG of a kept image, or None (no bytes kept, not an image, or no key)."""
    with instance.session() as s:
        media = s.get(Media, media_id)
        if media is None or not media.blob:
            return None
        capture = s.get(Capture, media.capture_id)
        if capture is None:
            return None
        minor = s.execute(select(Case.id).join(Match, Match.case_id == Case.id)
                          .where(Match.media_id == media_id, Case.category == "minor")).first()
        if minor:                   # never shown (and never stored in the first place)
            return None
        name, data_key = media.blob, casekeys.capture_key(instance, s, capture)
    if data_key is None:            # every case it belonged to is withdrawn
        return None
    try:
        data = instance.blobs.get(data_key, name)
        from workers.signals.images import decode_image
        img = decode_image(data)
        img.thumbnail((THUMB_SIDE, THUMB_SIDE))
        out = io.BytesIO()
        img.convert("RGB").save(out, "JPEG", quality=80)
        return out.getvalue()
    except Exception:
        return None


@bp.route("/thumb/<int:media_id>")
@login_required("staff")
def thumb(media_id: int):
    instance = current_instance()
    data = thumbnail_bytes(instance, media_id)
    with instance.session() as s:
        audit.record(s, _actor(), "media.thumbnail", f"media:{media_id}", shown=data is not None)
    if data is None:
        return Response(PLACEHOLDER, mimetype="image/svg+xml")
    return Response(data, mimetype="image/jpeg")


# --- decisions -----------------------------------------------------------------------------------


def decide(instance, actor: str, staff_id: int | None, pairs: list[tuple[int, int]], decision: str) -> dict:
    """Apply one decision to (case, media) pairs; confirming creates their takedowns. Idempotent."""
    state = DECISIONS[decision]
    changed, takedowns = 0, []
    with instance.session() as s:
        for case_id, media_id in pairs:
            matches = s.execute(select(Match).where(Match.case_id == case_id, Match.media_id == media_id)).scalars().all()
            if not matches:
                continue
            for m in matches:
                if m.state != state:
                    m.state = state
                    changed += 1
                s.add(Review(match_id=m.id, staff_id=staff_id, decision=state))
            audit.record(s, actor, f"match.{decision}", f"case:{case_id}", media=media_id,
                         matches=[m.id for m in matches])
            if state != "confirmed":
                continue
            media = s.get(Media, media_id)
            capture = s.get(Capture, media.capture_id) if media else None
            if media is None:
                continue
            page = (capture.final_url or capture.url) if capture else media.url
            entry = {"url": media.url, "key": media.sha256_key}
            td = s.execute(select(Takedown).where(Takedown.case_id == case_id, Takedown.url == page)).scalars().first()
            if td is None:
                td = Takedown(case_id=case_id, url=page, domain_id=domain_id(s, page), status="ongoing")
                if hasattr(Takedown, "media"):
                    td.media = [entry]
                s.add(td)
                s.flush()
                audit.record(s, actor, "takedown.create", f"takedown:{td.id}", case=case_id, media=media_id)
            elif hasattr(Takedown, "media") and entry not in (td.media or []):
                td.media = [*(td.media or []), entry]
                td.updated_at = utcnow()
            takedowns.append(td.id)
            mark_found(s, case_id)
    return {"changed": changed, "takedowns": sorted(set(takedowns))}


def _parse_pairs(values) -> list[tuple[int, int]]:
    out = []
    for v in values:
        try:
            c, m = v.split(":")
            out.append((int(c), int(m)))
        except ValueError:
            abort(400)
    return out


@bp.route("/decide", methods=["POST"])
@login_required("staff")
def decide_view():
    instance = current_instance()
    one = request.form.get("one")
    if one:                                  # a row's own button: "case:media:decision"
        c, m, decision = (one.split(":") + ["", "", ""])[:3]
        pairs = _parse_pairs([f"{c}:{m}"])
    else:                                    # bulk: the checked rows of this page
        decision = request.form.get("decision", "")
        pairs = _parse_pairs(request.form.getlist("pair"))
    if decision not in DECISIONS:
        abort(400)
    if not pairs:
        flash(_("Choose at least one row first."), "error")
    else:
        result = decide(instance, _actor(), g.staff.id, pairs, decision)
        flash(_("%(n)d decision(s) saved; %(t)d URL(s) to take down.", n=len(pairs), t=len(result["takedowns"])),
              "info")
        if result["takedowns"]:
            session["new_takedowns"] = result["takedowns"][:20]     # linked once on the next page
    view = request.form.get("view", "open")
    page = request.form.get("page", 1, type=int) or 1
    return redirect(url_for("review.queue", view=view if view in VIEWS else "open", page=max(1, page)))
