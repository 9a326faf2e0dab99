"""What one capture returns: its limits, every request/response exchange, and the result."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone


class CaptureError(RuntimeError):
    pass


@dataclass
class Limits:
    page_seconds: float = 60.0          # wall time for one page, everything included
    page_bytes: int = 256 * 1024 * 1024  # bytes received (and kept) for one page
    max_scrolls: int = 40               # viewport steps before an ever-growing page counts as a limit
    idle_seconds: float = 1.0           # network quiet this long means the page has settled
    max_redirects: int = 20
    max_screenshot_height: int = 16000
    max_segments: int = 400             # HLS/DASH segments fetched beyond what the player loaded
    width: int = 1280
    height: int = 900

    @classmethod
    def from_settings(cls, settings, remaining_seconds: float | None = None, remaining_bytes: int | None = None):
        lim = cls(page_seconds=float(settings.crawl_page_seconds), page_bytes=int(settings.crawl_page_bytes),
                  max_scrolls=int(settings.crawl_max_scrolls), idle_seconds=float(settings.crawl_idle_seconds),
                  max_segments=int(settings.crawl_max_segments))
        if remaining_seconds is not None:
            lim.page_seconds = max(1.0, min(lim.page_seconds, remaining_seconds))
        if remaining_bytes is not None:
            lim.page_bytes = max(0, min(lim.page_bytes, remaining_bytes))
        return lim


@dataclass
class Exchange:
    """One request and its response as the browser saw them (a WARC request/response pair)."""
    request_id: str
    url: str
    method: str = "GET"
    request_headers: dict = field(default_factory=dict)
    post_data: str | None = None
    resource_type: str = ""
    frame_id: str = ""
    started: float = 0.0                 # wall clock (epoch seconds)
    status: int | None = None
    status_text: str = ""
    protocol: str = ""
    headers: dict = field(default_factory=dict)
    mime: str = ""
    remote_ip: str | None = None
    body: bytes | None = None
    truncated: bool = False
    error: str | None = None
    redirect_to: str | None = None
    finished: bool = False
    source: str = "browser"              # browser | fetched (whole file fetched through the browser)

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.body).hexdigest() if self.body is not None else None


@dataclass
class CaptureResult:
    url: str
    final_url: str = ""
    status: str = "error"                # ok | error | limit
    http_status: int | None = None
    error: str | None = None
    server_ip: str | None = None
    redirects: list = field(default_factory=list)   # [{"url", "status", "location"}]
    captured_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    html: bytes | None = None
    html_source: str = "served"          # served | dom (when the served body never completed)
    mhtml: bytes | None = None
    screenshot: bytes | None = None
    links: list = field(default_factory=list)
    media: list = field(default_factory=list)       # [{"url", "mime", "body", "sha256", "bytes", ...}]
    exchanges: list = field(default_factory=list)   # every Exchange, in order (for the WARC)
    limits_hit: list = field(default_factory=list)
    blocked: list = field(default_factory=list)     # URLs refused (private addresses)
    browser: str = ""
    user_agent: str = ""
    elapsed: float = 0.0
    bytes_received: int = 0
    gate: str | None = None             # what `on_load` did (an age gate or cookie wall passed)
    extracted: dict = field(default_factory=dict)   # what `extract` read from the loaded DOM

    def summary(self) -> dict:
        return {"url": self.url, "final_url": self.final_url, "status": self.status, "error": self.error,
                "media": [{"url": m["url"], "sha256": m["sha256"], "mime": m["mime"], "bytes": m["bytes"]}
                          for m in self.media]}
