"""Media and streams: what counts as media, the parts an HLS or DASH manifest names, and whole
files fetched through the browser (`Network.loadNetworkResource`, so through the address guard
like every other request) for ranged videos and segments the player had not loaded yet."""
from __future__ import annotations

import base64
import io
import re
import time
from urllib.parse import urljoin, urlsplit

from workers.capture.browser import cdp
from workers.capture.pageload import PageLoad
from workers.capture.records import Exchange, Limits
from workers.net.addresses import Refused

STREAM_MIMES = {"application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl",
                "application/dash+xml", "video/mp2t", "video/iso.segment"}
STREAM_EXT = (".m3u8", ".mpd", ".ts", ".m4s", ".mp4", ".webm", ".m4v", ".mov", ".mkv", ".ogv")


def is_media(ex: Exchange) -> bool:
    return ex.body is not None and media_kind(ex)


def media_kind(ex: Exchange) -> bool:
    """An image, video, audio or stream response (by type, MIME or path), body or not."""
    if ex.status not in (200, 203, 206):
        return False
    mime = (ex.mime or "").lower()
    if mime.startswith(("image/", "video/", "audio/")) or mime in STREAM_MIMES:
        return True
    if ex.resource_type in ("Image", "Media"):
        return True
    path = urlsplit(ex.url).path.lower()
    return path.endswith(STREAM_EXT)


def is_hls(ex: Exchange) -> bool:
    return "mpegurl" in (ex.mime or "").lower() or urlsplit(ex.url).path.lower().endswith(".m3u8")


def is_dash(ex: Exchange) -> bool:
    return "dash+xml" in (ex.mime or "").lower() or urlsplit(ex.url).path.lower().endswith(".mpd")


def stream_parts(ex: Exchange) -> list[str]:
    """URLs an HLS or DASH manifest names (segments, init sections, variant playlists)."""
    text = (ex.body or b"").decode("utf-8", "replace")
    urls = []
    if is_hls(ex):
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                for uri in re.findall(r'#EXT-X-(?:MAP|MEDIA|I-FRAME-STREAM-INF)[^\n]*?URI="([^"]+)"', line):
                    urls.append(urljoin(ex.url, uri))
                continue
            urls.append(urljoin(ex.url, line))
    elif is_dash(ex):
        base = ex.url
        m = re.search(r"<BaseURL>([^<]+)</BaseURL>", text)
        if m:
            base = urljoin(ex.url, m.group(1).strip())
        for attr in re.findall(r'(?:media|sourceURL)="([^"$]+)"', text):
            urls.append(urljoin(base, attr))
    seen, out = set(), []
    for u in urls:
        if u not in seen and u.startswith(("http:", "https:")):
            seen.add(u)
            out.append(u)
    return out


def load_whole(driver, s: PageLoad, url: str, budget: int) -> Exchange | None:
    ex = Exchange(request_id=f"fetch-{len(s.order)}", url=url, started=time.time(), source="fetched")
    try:
        got = cdp(driver, "Network.loadNetworkResource", {
            "frameId": s.main_frame, "url": url,
            "options": {"disableCache": True, "includeCredentials": True}})["resource"]
    except Exception as exc:
        ex.error = str(exc).splitlines()[0][:200]
        return ex
    ex.status = got.get("httpStatusCode")
    ex.headers = got.get("headers") or {}
    ex.mime = next((v.split(";")[0].strip() for k, v in ex.headers.items() if k.lower() == "content-type"), "")
    handle = got.get("stream")
    if not got.get("success") or not handle:
        ex.error = got.get("netErrorName") or "failed"
        return ex
    buf = io.BytesIO()
    try:
        while True:
            if time.monotonic() >= s.deadline:
                ex.truncated = True
                break
            chunk = cdp(driver, "IO.read", {"handle": handle, "size": 1 << 20})
            data = base64.b64decode(chunk["data"]) if chunk.get("base64Encoded") else chunk["data"].encode("latin-1")
            buf.write(data)
            if buf.tell() > budget:
                ex.truncated = True
                break
            if chunk.get("eof"):
                break
    finally:
        try:
            cdp(driver, "IO.close", {"handle": handle})
        except Exception:
            pass
    ex.body = buf.getvalue()
    ex.finished = True
    return ex


def header(ex: Exchange, name: str) -> str | None:
    return next((v for k, v in (ex.headers or {}).items() if k.lower() == name), None)


def total_size(ex: Exchange) -> int | None:
    """The whole file's size as the server declared it (Content-Range total, or Content-Length of a 200)."""
    rng = header(ex, "content-range")
    if rng and "/" in rng and rng.rsplit("/", 1)[1].strip().isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = header(ex, "content-length")
    if ex.status == 200 and length and length.strip().isdigit():
        return int(length)
    return None


def complete(ex: Exchange) -> bool:
    if ex.body is None or ex.truncated:
        return False
    total = total_size(ex)
    if ex.status == 200:
        encoded = (header(ex, "content-encoding") or "identity").lower() != "identity"
        return total is None or encoded or total == len(ex.body)
    return ex.status == 206 and total == len(ex.body)


def fetch_whole(driver, s: PageLoad, limits: Limits):
    have = {e.url for e in s.order if complete(e)}
    wanted: list[str] = []
    for e in list(s.order):
        if e.url in have or e.url in wanted or e.status not in (200, 206) or e.source != "browser":
            continue
        total = total_size(e)
        if e.resource_type != "Media":
            # An image whose body the browser did not keep (or kept short): fetch it again, whole.
            encoded = (header(e, "content-encoding") or "identity").lower() != "identity"
            short = e.body is None or (total is not None and not encoded and len(e.body) != total)
            if media_kind(e) and short and not e.truncated and total is not None \
                    and total <= limits.page_bytes - s.kept:
                wanted.append(e.url)
            continue
        if total is None or total > limits.page_bytes - s.kept:
            # Unknown or over the budget: keep what the player got; the page counts as limited.
            if "bytes" not in s.r.limits_hit:
                s.r.limits_hit.append("bytes")
            continue
        wanted.append(e.url)
    queue = [e for e in s.order if e.body is not None and (is_hls(e) or is_dash(e))]
    segments = 0
    while queue or wanted:
        if queue:
            manifest = queue.pop(0)
            for part in stream_parts(manifest):
                if part not in have and part not in wanted:
                    wanted.append(part)
            continue
        url = wanted.pop(0)
        if url in have:
            continue
        if s.over() or segments >= limits.max_segments:
            if segments >= limits.max_segments and "segments" not in s.r.limits_hit:
                s.r.limits_hit.append("segments")
            break
        try:
            s.guard.check_url(url)          # the guard refuses it anyway; this keeps it off the budget
        except Refused:
            s.r.blocked.append(url)
            continue
        segments += 1
        ex = load_whole(driver, s, url, limits.page_bytes - s.kept)
        if ex is None:
            continue
        s.order.append(ex)
        if ex.body is not None:
            s.kept += len(ex.body)
            s.received += len(ex.body)
            have.add(url)
            if ex.truncated and "bytes" not in s.r.limits_hit and time.monotonic() < s.deadline:
                s.r.limits_hit.append("bytes")
            if is_hls(ex) or is_dash(ex):
                queue.append(ex)
