"""A page's artifacts once it has loaded: links and data: URLs read from the DOM, the HTML, the
MHTML snapshot, the stamped screenshot, and the list of media bodies to hash."""
from __future__ import annotations

import base64
import hashlib
import io
from datetime import datetime, timezone
from urllib.parse import unquote_to_bytes

from workers.capture.browser import cdp, js
from workers.capture.pageload import PageLoad
from workers.capture.records import CaptureResult, Exchange, Limits
from workers.capture.streams import complete, is_media

DATA_URL_KEEP = 64


def decode_data_url(url: str) -> tuple[str, bytes] | None:
    try:
        head, payload = url[5:].split(",", 1)
    except ValueError:
        return None
    parts = head.split(";")
    mime = parts[0] or "text/plain"
    try:
        body = base64.b64decode(payload + "=" * (-len(payload) % 4)) if "base64" in parts[1:] else unquote_to_bytes(payload)
    except Exception:
        return None
    return mime, body


DOM_SCAN = r"""
const out = {links: [], data: [], ua: navigator.userAgent};
let total = 0;   // data: URLs kept: at most 200, 32 MB in all
const add = (u) => {
  if (typeof u !== 'string' || !u.startsWith('data:') || out.data.length >= 200 || total + u.length > 33554432) return;
  total += u.length; out.data.push(u);
};
const scan = (doc) => {
  for (const a of doc.querySelectorAll('a[href], area[href]')) if (out.links.length < 2000) out.links.push(a.href);
  for (const el of doc.querySelectorAll('img, source, video, audio, input[type=image]')) {
    add(el.currentSrc); add(el.src); add(el.poster);
    for (const part of (el.srcset || '').split(',')) add(part.trim().split(/\s+/)[0]);
  }
  for (const el of doc.querySelectorAll('*')) {
    const bg = getComputedStyle(el).backgroundImage;
    if (bg && bg.includes('data:')) for (const m of bg.matchAll(/url\("?(data:[^")]+)"?\)/g)) add(m[1]);
  }
  for (const f of doc.querySelectorAll('iframe, frame')) { try { if (f.contentDocument) scan(f.contentDocument); } catch (e) {} }
};
scan(document);
return out;
"""


def take_artifacts(driver, s: PageLoad, result: CaptureResult, limits: Limits, main: Exchange | None):
    if main is None or main.status is None:
        return                          # nothing of the site's own arrived (an error page is the browser's)
    # Only a page's HTML is its source: when the URL is the media itself, its bytes are media
    # (kept as such when they match), and their hash must not stand as a page's in the clear.
    if main.body is not None and not main.truncated and "html" in (main.mime or "").lower():
        result.html = main.body
    scan = None
    try:
        scan = js(driver, DOM_SCAN)
    except Exception:
        pass
    if scan:
        result.user_agent = scan.get("ua", "")
        links, seen = [], set()
        for href in scan.get("links", []):
            if isinstance(href, str) and href.startswith(("http:", "https:")):
                href = href.split("#", 1)[0]
                if href not in seen:
                    seen.add(href)
                    links.append(href)
        result.links = links
        s.data_urls.extend(scan.get("data", []))
    if getattr(s, "extract", None) is not None:
        try:
            result.extracted = dict(s.extract(driver) or {})
        except Exception:
            pass
    if result.html is None:
        try:
            dom = js(driver, "return document.documentElement ? document.documentElement.outerHTML : '';")
            if dom:
                result.html, result.html_source = dom.encode("utf-8"), "dom"
        except Exception:
            pass
    try:
        result.mhtml = cdp(driver, "Page.captureSnapshot", {"format": "mhtml"})["data"].encode("utf-8")
    except Exception:
        pass
    try:
        result.screenshot = screenshot(driver, result, limits)
    except Exception:
        pass


def screenshot(driver, result: CaptureResult, limits: Limits) -> bytes:
    metrics = cdp(driver, "Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics.get("contentSize")
    width = max(1, min(int(size["width"]), 4 * limits.width))
    height = max(1, min(int(size["height"]), limits.max_screenshot_height))
    shot = cdp(driver, "Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    return stamp(base64.b64decode(shot["data"]), result.captured_at, result.final_url or result.url)


def stamp(png: bytes, when: datetime, url: str) -> bytes:
    """Draw the UTC capture time (and the URL) in a band above the screenshot."""
    from PIL import Image, ImageDraw, ImageFont
    page = Image.open(io.BytesIO(png)).convert("RGB")
    band = 28
    out = Image.new("RGB", (page.width, page.height + band), (255, 255, 255))
    out.paste(page, (0, band))
    draw = ImageDraw.Draw(out)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:
        font = ImageFont.load_default()
    draw.rectangle([0, 0, page.width, band - 1], fill=(255, 244, 200))
    text = f"captured {when.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC  {url}"
    draw.text((6, 5), text[:300], fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def collect_media(s: PageLoad, result: CaptureResult):
    media, seen = [], set()
    whole = {ex.url for ex in s.order if is_media(ex) and complete(ex)}
    for ex in s.order:
        if not is_media(ex) or (ex.url in whole and not complete(ex)):
            continue
        key = (ex.url, ex.sha256)
        if key in seen:
            continue
        seen.add(key)
        media.append({"url": ex.url, "mime": (ex.mime or "").lower(), "body": ex.body, "sha256": ex.sha256,
                      "bytes": len(ex.body), "truncated": ex.truncated, "status": ex.status,
                      "source": ex.source, "type": ex.resource_type})
    for url in s.data_urls:
        decoded = decode_data_url(url)
        if not decoded:
            continue
        mime, body = decoded
        if not mime.lower().startswith(("image/", "video/", "audio/")):
            continue
        sha = hashlib.sha256(body).hexdigest()
        key = (url[:DATA_URL_KEEP], sha)
        if key in seen:
            continue
        seen.add(key)
        media.append({"url": url[:DATA_URL_KEEP], "mime": mime.lower(), "body": body, "sha256": sha,
                      "bytes": len(body), "truncated": False, "status": None, "source": "data", "type": "Image"})
    result.media = media
