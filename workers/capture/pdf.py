"""Evidence PDFs for lawyers: one per case (or one URL of it), PDF/A-3b by WeasyPrint.

Per URL: the screenshot (clear: this is the legal record; never for a minor's case,
where none was kept), requested and final URL, redirects, capture time in UTC and JST,
the server's IP, a table of the matched media with their hashes, and the notice history.
Every capture's WACZ, signed manifest, signature and timestamp token (when a TSA gave one)
are attached, and an appendix lists the chain of custody from the audit log. Exporting is
audited.

The PDF signs itself, as PDF signatures do with a byte range: WeasyPrint writes an
uncompressed placeholder (`SEAL_MARK` + spaces) into an object of its own, the SHA-256 of
every byte outside the placeholder is signed with the organisation's Ed25519 key, and the
signature document (canonical JSON) is written into the placeholder. `verify_pdf` redoes
this, so one byte changed anywhere in the file fails it (`kesu evidence verify FILE.pdf`).
"""
import base64
import hashlib
import io
import json
from datetime import timedelta, timezone

from flask_babel import force_locale
from sqlalchemy import or_, select

from crypto import CryptoError
from crypto.sealing import b64, unb64
from crypto.signing import canonical, fingerprint, sign
from crypto.signing import verify as verify_signature
from store import audit, casekeys, people
from store.models import AuditEntry, Capture, Case, Match, Media, Notice, Takedown, TakedownEvent, utcnow
from workers.capture.evidence import pin_problem

JST = timezone(timedelta(hours=9), "JST")
SEAL_MARK = b"KESU-PDF-SIGNATURE-V1:"
SEAL_SIZE = 640                       # bytes kept for the signature document (canonical JSON)


def _open_signals(instance, session, media):
    return casekeys.media_signals(instance, session, media) or {}


def _times(dt):
    utc = dt.replace(tzinfo=timezone.utc)
    return utc.strftime("%Y-%m-%d %H:%M:%S UTC"), utc.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S JST")


def _notice_text(instance, notice, open_archive) -> str:
    """The notice as it was sent (its archived copy), or why it cannot be shown."""
    if not notice.archived:
        return ""
    import email
    import email.policy
    try:
        msg = email.message_from_bytes(open_archive(instance, notice), policy=email.policy.default)
        return f"{msg['Subject']}\n\n{msg.get_content()}"
    except Exception as exc:           # a key gone with a withdrawal: say so, never fail the export
        return f"(archived copy cannot be opened: {type(exc).__name__})"


def gather(instance, case_id: int, url: str | None = None) -> dict:
    """Everything the PDF shows, decrypted in memory."""
    from workers.capture import evidence as ev
    from workers.capture.crawl import capture_artifacts
    from workers.takedown.notify import open_archive
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
                    "proxy": bool((capture.evidence or {}).get("proxy")),
                    "timestamped": ev.TIMESTAMP in ((capture.evidence or {}).get("artifacts") or {}),
                    "timestamp_error": (capture.evidence or {}).get("timestamp_error"),
                    "artifacts": (capture.evidence or {}).get("artifacts", {}), "screenshot": None}
            item = page["media"].get(media.id)
            if item is None:
                sig = _open_signals(instance, s, media)
                item = page["media"][media.id] = {"url": media.url, "sha256": sig.get("sha256", ""),
                                                  "md5": sig.get("md5", ""), "mime": media.mime,
                                                  "bytes": media.size, "matches": []}
            item["matches"].append({"kind": match.kind, "distance": match.distance,
                                    "confidence": match.confidence, "state": match.state})
        notices = s.execute(select(Notice, Takedown).join(Takedown, Notice.takedown_id == Takedown.id)
                            .where(Takedown.case_id == case_id).order_by(Notice.sent_at)).all()
        name = people.describer(s)
        notice_rows = [{"url": t.url, "route": n.route, "recipient": n.recipient, "language": n.language,
                        "sent": _times(n.sent_at)[0] if n.sent_at else "", "message_id": n.message_id or "",
                        "status": t.status, "state": n.state, "text": _notice_text(instance, n, open_archive)}
                       for n, t in notices if (not url or t.url == url) and n.channel != "victim"]
        takedowns = s.execute(select(Takedown).where(Takedown.case_id == case_id)).scalars().all()
        takedowns = [t for t in takedowns if not url or t.url == url]
        checks = [{"at": _times(e.at)[0], "url": t.url, "kind": e.kind, "outcome": (e.detail or {}).get("outcome", ""),
                   "http": (e.detail or {}).get("http"), "why": (e.detail or {}).get("why", ""),
                   "status": (e.detail or {}).get("status", ""), "by": name(e.actor)}
                  for t in takedowns for e in s.execute(
                      select(TakedownEvent).where(TakedownEvent.takedown_id == t.id,
                                                  TakedownEvent.kind.in_(("check", "watch", "reupload")))
                      .order_by(TakedownEvent.id)).scalars()]
        targets = [f"case:{case_id}"] + [f"capture:{c}" for c in pages] + [f"takedown:{t.id}" for t in takedowns]
        custody = [{"at": _times(e.at)[0], "actor": name(e.actor), "action": e.action, "target": e.target,
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
            "checks": checks, "timestamped": any(p["timestamped"] for p in pages.values()),
            "custody": custody, "attachments": attachments,
            "verify_key": b64(instance.private_keys().verify_key),
            "fingerprint": fingerprint(instance.private_keys().verify_key), "org": instance.settings.org_name,
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
        pdf_variant="pdf/a-3b", attachments=attachments, pdf_identifier=hashlib.sha256(html.encode()).digest()[:16],
        finisher=_seal_placeholder)
    with instance.session() as s:
        head = audit.head(s)            # the audit log's end, signed with the PDF (store/audit.py)
    pdf = seal(pdf, instance.private_keys(), {"case": case_id, "url": url or "", "signed_at": data["generated"][0],
                                              "audit_head": head})
    with instance.session() as s:
        audit.record(s, actor, "evidence.export", f"case:{case_id}", url=url or "", pages=len(data["pages"]),
                     sha256=hashlib.sha256(pdf).hexdigest())
    return pdf


# --- the PDF's own signature ------------------------------------------------------------------------

def _seal_placeholder(_document, pdf) -> None:
    """WeasyPrint finisher: an uncompressed stream holding the placeholder, named in the catalog."""
    import pydyf
    stream = pydyf.Stream([SEAL_MARK + b" " * SEAL_SIZE], compress=False)
    pdf.add_object(stream)
    pdf.catalog["KesuSignature"] = stream.reference


def _signed_range(pdf: bytes) -> tuple[int, int]:
    """(start, end) of the signature document inside the PDF; ValueError when absent or doubled."""
    at = pdf.find(SEAL_MARK)
    if at < 0 or pdf.find(SEAL_MARK, at + 1) >= 0:
        raise ValueError("no kesu signature in this PDF" if at < 0 else "two kesu signatures in this PDF")
    start = at + len(SEAL_MARK)
    return start, start + SEAL_SIZE


def _digest(pdf: bytes, start: int, end: int) -> str:
    return hashlib.sha256(pdf[:start] + pdf[end:]).hexdigest()


def seal(pdf: bytes, keys, facts: dict) -> bytes:
    """Sign the PDF's bytes outside the placeholder and write the signature document into it."""
    start, end = _signed_range(pdf)
    doc = {"v": 1, "alg": "ed25519", "key_id": keys.key_id, "verify_key": b64(keys.verify_key),
           "sha256": _digest(pdf, start, end), **facts}
    doc["signature"] = sign(keys.signing_key, doc)
    body = canonical(doc)
    if len(body) > SEAL_SIZE:
        raise ValueError("signature document larger than its placeholder")
    return pdf[:start] + body.ljust(SEAL_SIZE, b" ") + pdf[end:]


def verify_pdf(path, pin=None, tsa_roots=None) -> dict:
    """Check an exported evidence PDF: its signature over every other byte, by a pinned key
    (evidence.pin_problem). Same report shape as workers.capture.evidence.verify."""
    report = {"file": str(path), "kind": "evidence_pdf", "ok": False, "problems": [], "signed_by": None,
              "manifest": None}
    try:
        with open(path, "rb") as fh:
            pdf = fh.read()
        start, end = _signed_range(pdf)
        doc = json.loads(pdf[start:end].rstrip(b" "))
        signature = doc.pop("signature")
        key = unb64(doc["verify_key"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report["problems"].append(f"not a signed kesu evidence PDF: {exc}")
        return report
    untrusted = pin_problem(pin, key)
    if untrusted:
        report["problems"].append(untrusted)
    try:
        verify_signature(key, doc, signature)
        report["signed_by"] = {"key_id": doc.get("key_id"), "verify_key": doc["verify_key"],
                               "fingerprint": fingerprint(key)}
    except CryptoError as exc:
        report["problems"].append(f"signature does not verify: {exc}")
    if doc.get("sha256") != _digest(pdf, start, end):
        report["problems"].append("the PDF was altered after it was signed (SHA-256 differs)")
    report["manifest"] = {"case": doc.get("case"), "url": doc.get("url"), "signed_at": doc.get("signed_at"),
                          "sha256": doc.get("sha256")}
    if doc.get("audit_head"):
        report["audit_head"] = {**doc["audit_head"], "signed_at": doc.get("signed_at")}
    report["ok"] = not report["problems"]
    return report
