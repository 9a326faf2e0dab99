"""Evidence PDFs for lawyers: one per case (or one URL of it), PDF/A-3b by WeasyPrint.

Per URL: the screenshot (clear: this is the legal record; never for a minor's case,
where none was kept), requested and final URL, redirects, capture time in UTC and JST,
the server's IP, a table of the matched media with their hashes, and the notice history.
Every capture's WACZ, signed manifest, signature and timestamp token are attached, and
an appendix lists the chain of custody from the audit log. Exporting is audited.
"""
import base64
import hashlib
import io
import json
from datetime import timedelta, timezone

from flask_babel import force_locale
from sqlalchemy import or_, select

from crypto.sealing import b64, unseal
from store import audit
from store.models import AuditEntry, Capture, Case, Match, Media, Notice, Takedown, utcnow

JST = timezone(timedelta(hours=9), "JST")


def _open_signals(instance, sealed):
    return json.loads(unseal(instance.private_keys().private_key, sealed)) if sealed else {}


def _times(dt):
    utc = dt.replace(tzinfo=timezone.utc)
    return utc.strftime("%Y-%m-%d %H:%M:%S UTC"), utc.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S JST")


def gather(instance, case_id: int, url: str | None = None) -> dict:
    """Everything the PDF shows, decrypted in memory."""
    from workers.capture.crawl import capture_artifacts
    with instance.session() as s:
        case = s.get(Case, case_id)
        if case is None:
            raise LookupError(f"no case {case_id}")
        rows = s.execute(select(Match, Media, Capture).join(Media, Match.media_id == Media.id)
                         .join(Capture, Media.capture_id == Capture.id)
                         .where(Match.case_id == case_id, Match.state != "rejected")
                         .order_by(Capture.captured_at, Media.id)).all()
        pages: dict[int, dict] = {}
        for match, media, capture in rows:
            if url and url not in (capture.url, capture.final_url, media.url):
                continue
            page = pages.get(capture.id)
            if page is None:
                utc, jst = _times(capture.captured_at)
                page = pages[capture.id] = {
                    "capture": capture.id, "url": capture.url, "final_url": capture.final_url,
                    "redirects": capture.redirects or [], "server_ip": capture.server_ip or "",
                    "http_status": capture.http_status, "utc": utc, "jst": jst, "media": {},
                    "metadata_only": bool((capture.evidence or {}).get("metadata_only")),
                    "artifacts": (capture.evidence or {}).get("artifacts", {}), "screenshot": None}
            item = page["media"].get(media.id)
            if item is None:
                sig = _open_signals(instance, media.signals)
                item = page["media"][media.id] = {"url": media.url, "sha256": sig.get("sha256", ""),
                                                  "md5": sig.get("md5", ""), "mime": media.mime,
                                                  "bytes": media.size, "matches": []}
            item["matches"].append({"kind": match.kind, "distance": match.distance,
                                    "confidence": match.confidence, "state": match.state})
        notices = s.execute(select(Notice, Takedown).join(Takedown, Notice.takedown_id == Takedown.id)
                            .where(Takedown.case_id == case_id).order_by(Notice.sent_at)).all()
        notice_rows = [{"url": t.url, "route": n.route, "recipient": n.recipient, "language": n.language,
                        "sent": _times(n.sent_at)[0] if n.sent_at else "", "message_id": n.message_id or "",
                        "status": t.status} for n, t in notices if not url or t.url == url]
        targets = [f"case:{case_id}"] + [f"capture:{c}" for c in pages]
        custody = [{"at": _times(e.at)[0], "actor": e.actor, "action": e.action, "target": e.target,
                    "hash": e.hash} for e in s.execute(select(AuditEntry).where(or_(
                        AuditEntry.target.in_(targets))).order_by(AuditEntry.id)).scalars()]
        category = case.category
    attachments = []
    for page in pages.values():
        if not page["artifacts"]:
            continue
        files = capture_artifacts(instance, page["capture"])
        shot = files.get("screenshot.png")
        if shot and not page["metadata_only"]:
            page["screenshot"] = "data:image/png;base64," + base64.b64encode(shot).decode()
        for name, data in sorted(files.items()):
            if name == "screenshot.png" or name.endswith(".html") or name.endswith(".mhtml"):
                continue     # the screenshot is on the page; HTML and MHTML stay inside the WACZ's capture
            attachments.append((f"capture-{page['capture']}-{name}", data))
    for page in pages.values():
        page["media"] = list(page["media"].values())
    return {"case": case_id, "category": category, "pages": list(pages.values()), "notices": notice_rows,
            "custody": custody, "attachments": attachments,
            "verify_key": b64(instance.private_keys().verify_key), "org": instance.settings.org_name,
            "generated": _times(utcnow())}


def render(instance, case_id: int, url: str | None = None, language: str = "ja", actor: str = "cli") -> bytes:
    from flask import render_template
    from weasyprint import HTML, Attachment

    from web import make_app
    data = gather(instance, case_id, url)
    app = make_app("evidence")
    with app.test_request_context(f"/?lang={language}"), force_locale(language):
        html = render_template("evidence/case.html", **data,
                               digests=[(n, hashlib.sha256(d).hexdigest(), len(d)) for n, d in data["attachments"]])
    attachments = [Attachment(file_obj=io.BytesIO(d), name=n, description=n, relationship="Source")
                   for n, d in data["attachments"]]
    pdf = HTML(string=html, base_url=str(app.template_folder)).write_pdf(
        pdf_variant="pdf/a-3b", attachments=attachments, pdf_identifier=hashlib.sha256(html.encode()).digest()[:16])
    with instance.session() as s:
        audit.record(s, actor, "evidence.export", f"case:{case_id}", url=url or "", pages=len(data["pages"]),
                     sha256=hashlib.sha256(pdf).hexdigest())
    return pdf
