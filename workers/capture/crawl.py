"""Crawl: capture pages, hash what they load, ask the matcher, write only what DESIGN §3 allows.

`crawl(instance, job_id)` walks a frontier of same-site links from the job's URL to its
depth (1: the page and the pages it links to), one Chromium for the whole job, a polite
delay between pages of a host, and the job's limits on pages, bytes and time from the
settings. For each page it holds every body in memory, computes signals, asks the matcher,
and then writes:

* always: a Capture row (URL, final URL, status, server IP, redirects, time) and one Media
  row per media body, named by HMAC(pepper, SHA-256) with its signals sealed to the org key.
  No plaintext hash and no bytes of unmatched media are stored.
* when a media matched a case: the full evidence (WACZ of every response, stamped
  screenshot, MHTML, HTML, the matched media bytes, a signed manifest, an RFC 3161 token
  when a TSA is set), each an encrypted blob under a data key of its own for the capture.
* when a match belongs to a case in the minor category: metadata only (the signed manifest
  of URLs and hashes), never bytes, never a screenshot.

The job is idempotent: a (job, URL) already written is skipped; a capture killed while its
blobs were being written is left as `pending` with the names of the blobs it meant to
write, and the retry deletes those before capturing the page again.

`run_job(job_id)` is what RQ runs (job arguments are ids, never keys or signals);
`report(instance, job_id)` gives the JSON of DESIGN §6.1.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from datetime import timezone
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select

from crypto import envelope
from crypto.sealing import seal, unb64
from store import audit, casekeys
from store.models import Capture, Case, CrawlJob, Match, Media, utcnow
from store.urls import site_of
from workers.capture import evidence as ev
from workers.capture import page as cap
from workers.capture import timestamp
from workers.matching.record import record
from workers.signals.pool import SignalPool, processes_for

log = logging.getLogger("kesu.crawl")

MINOR = "minor"
MAX_LINKS_KEPT = 500


# --- jobs ---------------------------------------------------------------------------------

def create_job(instance, url: str, depth: int = 1, requested_by: str = "", case_id: int | None = None) -> int:
    with instance.session() as s:
        job = CrawlJob(url=url, depth=depth, requested_by=requested_by, case_id=case_id, status="queued", stats={})
        s.add(job)
        s.flush()
        audit.record(s, requested_by or "system", "crawl.request", f"crawl_job:{job.id}", depth=depth)
        return job.id


def run_job(job_id: int) -> dict:
    """The RQ entry point: the instance (keys unlocked) is the worker's own."""
    from workers.system.context import instance
    return crawl(instance(), job_id)


def match_media(instance, media_signals: dict) -> list[dict]:
    """The matcher hook: [{"case": int, "kind", "distance", "confidence"}] for one media.

    Asks the long-lived matcher (the `match` queue's worker) when one runs, so a crawl worker
    builds no index and opens no case's signals; with no matcher running (a lone `kesu crawl`)
    it matches in this process."""
    from workers.matching import matcher
    url = media_signals.get("url", "")
    answer = matcher.ask(instance, media_signals, url)
    if answer is not None:
        return answer
    if not instance.unlocked:       # a crawl worker: it holds no key to match with itself
        raise MatcherUnavailable("no matcher (kesu worker --queues match) answered")
    return list(matcher.match_media(instance, media_signals, url=url) or [])


class MatcherUnavailable(RuntimeError):
    pass


# --- helpers ------------------------------------------------------------------------------


def normalise(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def media_signals(media: dict, faces: bool = True) -> dict:
    """Signals of one media body (in memory); never raises."""
    body = media["body"]
    out = {"sha256": media["sha256"], "md5": hashlib.md5(body).hexdigest(), "mime": media["mime"],
           "bytes": media["bytes"], "url": media["url"], "pdq": [], "vpdq": [], "faces": [], "error": None}
    if media.get("truncated"):
        out["error"] = "truncated"
        return out
    mime = media["mime"] or ""
    if "mpegurl" in mime or "dash+xml" in mime or not body:
        return out
    try:
        from workers.signals.media import body_signals
    except ImportError:
        body_signals = None
    try:
        if body_signals is not None:
            got = body_signals(body, faces=faces)
            for key in ("pdq", "vpdq", "faces", "error", "width", "height"):
                if key in got:
                    out[key] = got[key]
            return out
        if mime.startswith("image/"):
            from workers.signals.images import image_signals
            got = image_signals(body)
            out.update({"pdq": got["pdq"], "width": got.get("width"), "height": got.get("height")})
        elif mime.startswith("video/"):
            from workers.signals.videos import vpdq
            out["vpdq"] = vpdq(body)
    except ImportError:
        pass
    except Exception as exc:            # broken images, undecodable videos: hashes still count
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return out


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Keys:
    """What a crawl needs of the org keys: the public halves. Signing goes through
    workers.capture.signer (here when this process unlocked the key, else the keyed worker)."""

    def __init__(self, instance):
        self.instance = instance
        self.public = unb64(instance.public_key()[1])

    @property
    def private(self):
        """The public halves a manifest names (key id, verify key): never a private key."""
        from workers.capture.signer import PublicKeys
        return PublicKeys(self.instance)


# --- the job ------------------------------------------------------------------------------

def crawl(instance, job_id: int, progress=None, matcher=None, driver=None) -> dict:
    """Run (or resume) crawl job `job_id`. `progress(dict)` is told after each page."""
    settings = instance.settings
    matcher = matcher or match_media
    faces = settings.crawl_faces
    keys = Keys(instance)
    with instance.session() as s:
        job = s.get(CrawlJob, job_id)
        if job is None:
            raise LookupError(f"no crawl job {job_id}")
        if job.status == "done":
            return dict(job.stats or {})
        job.status = "running"
        job.error = None
        start_url, depth, operator, case_id = job.url, job.depth, job.requested_by, job.case_id
    started = time.monotonic()
    stats = {"pages": 0, "media": 0, "bytes": 0, "matches": 0, "captured": 0, "skipped": 0,
             "stopped": None, "queued": 1}
    own = driver is None
    pool = SignalPool(processes_for(settings.crawl_signal_processes))
    try:
        if own:
            driver = start_browser(settings)
        root = site_of(start_url)
        frontier = [(start_url, 0)]
        seen = {normalise(start_url)}
        last_visit: dict[str, float] = {}
        while frontier:
            url, level = frontier.pop(0)
            stats["queued"] = len(frontier)
            if stats["pages"] >= settings.crawl_max_pages:
                stats["stopped"] = "pages"
                break
            elapsed = time.monotonic() - started
            if elapsed >= settings.crawl_max_seconds:
                stats["stopped"] = "time"
                break
            if stats["bytes"] >= settings.crawl_max_bytes:
                stats["stopped"] = "bytes"
                break
            done = _existing(instance, job_id, url)
            if done is not None:
                links = (done.get("links") or [])
                stats["skipped"] += 1
            else:
                host = urlsplit(url).hostname or ""
                wait = settings.crawl_delay - (time.monotonic() - last_visit.get(host, -1e9))
                if wait > 0:
                    time.sleep(wait)          # politeness towards the site, not a test wait
                limits = cap.Limits.from_settings(settings, settings.crawl_max_seconds - elapsed,
                                                  settings.crawl_max_bytes - stats["bytes"])
                try:
                    result = cap.capture(url, driver=driver, limits=limits,
                                         allow_private=settings.crawl_allow_private)
                except Exception as exc:          # the browser itself failed (crashed, hung up)
                    if not own:
                        raise
                    log.warning("browser failed on a page: %s", type(exc).__name__)
                    result = cap.CaptureResult(url=url, final_url=url, status="error",
                                               error=f"browser failed: {str(exc).splitlines()[0][:200]}")
                last_visit[host] = time.monotonic()
                links = [l for l in result.links if site_of(l) == root][:MAX_LINKS_KEPT]
                written = write_page(instance, keys, job_id, case_id, operator, result, links, matcher, faces,
                                     pool)
                stats["captured"] += 1
                stats["media"] += len(result.media)
                stats["bytes"] += result.bytes_received
                stats["matches"] += written["matches"]
                if own and not driver_alive(driver):
                    driver = restart_browser(driver, settings)
            stats["pages"] += 1
            if level < depth:
                for link in links:
                    key = normalise(link)
                    if key not in seen and site_of(link) == root:
                        seen.add(key)
                        frontier.append((link, level + 1))
            stats["queued"] = len(frontier)
            stats["seconds"] = round(time.monotonic() - started, 2)
            _save_stats(instance, job_id, stats)
            if progress:
                progress({"url": url, "pages": stats["pages"], "queued": len(frontier), **stats})
        with instance.session() as s:
            job = s.get(CrawlJob, job_id)
            job.status = "done"
            job.stats = dict(stats)
            job.finished_at = utcnow()
        return stats
    except BaseException as exc:
        try:
            with instance.session() as s:
                job = s.get(CrawlJob, job_id)
                job.status = "error"
                job.error = f"{type(exc).__name__}: {exc}"[:2000]
                job.stats = dict(stats)
        except Exception:
            pass
        raise
    finally:
        pool.close()
        if own:
            close_browser(driver)


def driver_alive(driver) -> bool:
    try:
        driver.execute_script("return 1")
        return True
    except Exception:
        return False


def start_browser(settings):
    """The crawler's sandboxed browser behind its address guard, chained to `crawl_proxy` when set
    (everything goes through both, loopback too)."""
    return cap.open_browser(cap.Limits.from_settings(settings), allow_private=settings.crawl_allow_private,
                            upstream=settings.crawl_proxy)


def close_browser(driver) -> None:
    """Quit a browser from start_browser and everything it started (nothing is left behind)."""
    from workers.capture.chromium import close_driver
    close_driver(driver)


def restart_browser(driver, settings):
    close_browser(driver)
    return start_browser(settings)


def _save_stats(instance, job_id, stats):
    with instance.session() as s:
        job = s.get(CrawlJob, job_id)
        job.stats = dict(stats)


def _existing(instance, job_id: int, url: str) -> dict | None:
    """The evidence dict of (job, URL) when already written; cleans up a half-done one."""
    with instance.session() as s:
        rows = s.execute(select(Capture).where(Capture.job_id == job_id, Capture.url == url)
                         .order_by(Capture.id)).scalars().all()
        done = next((r for r in rows if r.status != "pending"), None)
        for row in rows:
            if row.status == "pending":     # killed while writing its blobs: undo, then capture again
                for name in (row.evidence or {}).get("pending", []):
                    instance.blobs.delete(name)
                s.delete(row)
        return dict(done.evidence or {}) if done is not None else None


# --- writing one page -------------------------------------------------------------------------

def write_page(instance, keys: Keys, job_id, case_id, operator, result, links, matcher, faces,
               pool: SignalPool | None = None) -> dict:
    settings = instance.settings
    # 1. signals (side by side in `pool`'s processes) and matches, in memory
    found = []          # (media dict, signals, [matches])
    signals = (pool or SignalPool(1)).map(functools.partial(media_signals, faces=faces), result.media)
    for m, sig in zip(result.media, signals):
        try:
            matches = list(matcher(instance, {**sig, "page": result.url}) or [])
        except MatcherUnavailable:
            raise           # no answer is not "no match": the job is retried, nothing is written
        except Exception as exc:
            log.warning("matcher failed on a media: %s", type(exc).__name__)
            matches = []
        found.append((m, sig, matches))
    case_ids = {int(x["case"]) for _, _, ms in found for x in ms}
    categories = {}
    if case_ids:
        with instance.session() as s:
            for cid, category, status in s.execute(select(Case.id, Case.category, Case.status)
                                                   .where(Case.id.in_(case_ids))):
                if status != "withdrawn":
                    categories[cid] = category
        case_ids = set(categories)                  # a withdrawn (or deleted) case keeps nothing
        found = [(m, sig, [x for x in ms if int(x["case"]) in case_ids]) for m, sig, ms in found]
    matched = bool(case_ids)
    minor = any(categories.get(c) == MINOR for c in case_ids)

    # 2. evidence, in memory
    data_key = envelope.new_key() if matched else None
    blobs: dict[str, bytes] = {}            # blob name -> plaintext
    evidence = {"links": links, "limits_hit": list(result.limits_hit), "blocked": list(result.blocked)[:50],
                "html_source": result.html_source, "browser": result.browser}
    kept_media: dict[str, str] = {}         # sha256 -> blob name (matched media bytes)
    if matched:
        artifacts = {}
        if not minor:
            warc = ev.build_warc(result)
            artifacts["capture.wacz"] = ev.build_wacz(warc, result)
            if result.screenshot:
                artifacts["screenshot.png"] = result.screenshot
            if result.mhtml:
                artifacts["page.mhtml"] = result.mhtml
            if result.html:
                artifacts["page.html"] = result.html
            for m, _, ms in found:
                if ms and m["sha256"] not in kept_media:
                    kept_media[m["sha256"]] = instance.blobs.name_for(data_key, m["body"])
                    blobs[kept_media[m["sha256"]]] = m["body"]
        org = keys.private
        cases = sorted(str(c) for c in case_ids)
        manifest = ev.build_manifest(result, artifacts, operator=operator,
                                     case=(str(case_id) if case_id else ",".join(cases)), job=job_id, keys=org,
                                     metadata_only=minor, media_kept=set(kept_media),
                                     proxy=bool(settings.crawl_proxy))
        from workers.capture.signer import sign
        manifest_bytes, signature = sign(instance, manifest)
        artifacts_meta = {}
        for name, data in list(artifacts.items()) + [(ev.MANIFEST, manifest_bytes), (ev.SIGNATURE, signature)]:
            blob = instance.blobs.name_for(data_key, data)
            blobs[blob] = data
            artifacts_meta[name] = {"blob": blob, "sha256": ev.sha256(data), "bytes": len(data)}
        if settings.tsa_url:
            try:
                tsr = timestamp.request(settings.tsa_url, manifest_bytes, timestamp.load_roots(settings.tsa_ca_file))
                blob = instance.blobs.name_for(data_key, tsr)
                blobs[blob] = tsr
                artifacts_meta[ev.TIMESTAMP] = {"blob": blob, "sha256": ev.sha256(tsr), "bytes": len(tsr)}
            except Exception as exc:
                evidence["timestamp_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        evidence["artifacts"] = artifacts_meta
        evidence["metadata_only"] = minor
        evidence["proxy"] = bool(settings.crawl_proxy)

    captured_at = result.captured_at.astimezone(timezone.utc).replace(tzinfo=None)
    capture_id = None
    # 3. blobs: in the database, inside the transaction of the capture's rows; in files, announced
    #    first (pending), then written, then the capture completed
    in_db = instance.settings.blobs_in_database
    if blobs and not in_db:
        with instance.session() as s:
            row = Capture(job_id=job_id, url=result.url, final_url=result.final_url or "", status="pending",
                          captured_at=captured_at, data_key=None, evidence={"pending": sorted(blobs)})
            s.add(row)
            s.flush()
            capture_id = row.id
        for name, data in blobs.items():
            written = instance.blobs.put(data_key, data)
            assert written == name
    n_matches = 0
    with instance.session() as s:
        if blobs and in_db:
            for name, data in blobs.items():
                assert instance.blobs.put(data_key, data, session=s) == name
        row = s.get(Capture, capture_id) if capture_id else Capture(job_id=job_id, url=result.url)
        row.final_url = result.final_url or ""
        row.status = result.status
        row.http_status = result.http_status
        row.error = result.error
        row.server_ip = result.server_ip
        row.redirects = list(result.redirects)
        row.captured_at = captured_at
        row.data_key = None          # sealed to each matched case by the writer, never to the org key
        row.evidence = evidence
        if capture_id is None:
            s.add(row)
        s.flush()
        for m, sig, ms in found:
            # A media that matched: its signals go under the capture's data key, sealed to her
            # case (the writer); one that matched nothing: sealed to the org key, for later cases.
            media = Media(capture_id=row.id, url=m["url"],
                          sha256_key=envelope.keyed_name(instance.pepper, bytes.fromhex(m["sha256"])),
                          mime=(m["mime"] or "")[:100], size=m["bytes"],
                          signals=None if ms else seal(keys.public, _dumps(sig)),
                          blob=kept_media.get(m["sha256"]))
            s.add(media)
            s.flush()
            ids = record(s, media, ms, instance=instance, data_key=data_key, signals=sig) if ms else []
            if ms and not ids:          # its cases were withdrawn meanwhile: it matched nothing
                media.signals = seal(keys.public, _dumps(sig))
            n_matches += len(ids)
        if matched:
            # chain of custody: who captured what, when; the manifest's hash, never content
            audit.record(s, (f"crawler:{operator}" if operator else "crawler")[:100], "evidence.capture",
                         f"capture:{row.id}", job=job_id, metadata_only=minor,
                         manifest_sha256=evidence["artifacts"][ev.MANIFEST]["sha256"])
    return {"capture_id": row.id, "matches": n_matches}


# --- reading back -----------------------------------------------------------------------------

def _open_signals(instance, session, media: Media) -> dict:
    return casekeys.media_signals(instance, session, media) or {}


# DESIGN §6.1 fixes the kinds the report names: a "frame" match (a still against a video frame)
# is a PDQ distance between two pictures, so it is reported as pdq, with "via": "frame"; when the
# same media matched the same case both ways, the closer one is reported (each kind once).
REPORT_KIND = {"frame": "pdq"}


def report(instance, job_id: int) -> dict:
    """The JSON of DESIGN §6.1 for one job (needs the org key unlocked: hashes are sealed)."""
    pages, matches = [], []
    with instance.session() as s:
        job = s.get(CrawlJob, job_id)
        captures = s.execute(select(Capture).where(Capture.job_id == job_id, Capture.status != "pending")
                             .order_by(Capture.id)).scalars().all()
        for c in captures:
            media_out = []
            for m in sorted(c.media, key=lambda x: x.id):
                sig = _open_signals(instance, s, m)
                media_out.append({"url": m.url, "sha256": sig.get("sha256"), "mime": m.mime, "bytes": m.size})
                rows = s.execute(select(Match).where(Match.media_id == m.id).order_by(Match.id)).scalars().all()
                found: dict[tuple, dict] = {}
                for x in rows:
                    kind = REPORT_KIND.get(x.kind, x.kind)
                    row = {"case": str(x.case_id), "page": c.url, "url": m.url, "sha256": sig.get("sha256"),
                           "kind": kind, "distance": x.distance, "confidence": x.confidence}
                    if kind != x.kind:
                        row["via"] = x.kind
                    seen = found.get((x.case_id, kind))
                    if seen is None or (row["distance"], -row["confidence"]) < (seen["distance"], -seen["confidence"]):
                        found[x.case_id, kind] = row
                matches.extend(found.values())
            pages.append({"url": c.url, "final_url": c.final_url, "status": c.status, "error": c.error,
                          "http_status": c.http_status, "server_ip": c.server_ip,
                          "captured_at": ev.iso(c.captured_at), "capture": c.id,
                          "evidence": sorted((c.evidence or {}).get("artifacts", {})),
                          "media": media_out})
        out = {"pages": pages, "matches": matches,
               "job": {"id": job_id, "status": job.status if job else None, "stats": dict(job.stats or {}) if job else {}}}
    return out


def capture_artifacts(instance, capture_id: int) -> dict[str, bytes]:
    """The decrypted evidence files of one capture (manifest and signature included)."""
    with instance.session() as s:
        c = s.get(Capture, capture_id)
        if c is None or c.status == "pending":
            raise LookupError(f"no capture {capture_id}")
        if not (c.evidence or {}).get("artifacts"):
            raise LookupError(f"capture {capture_id} holds no evidence (nothing on it matched)")
        data_key = casekeys.capture_key(instance, s, c)
        if data_key is None:
            raise LookupError(f"capture {capture_id}: no case it belongs to can open it (withdrawn)")
        meta = dict((c.evidence or {}).get("artifacts", {}))
    out = {}
    for name, item in meta.items():
        data = instance.blobs.get(data_key, item["blob"])
        if ev.sha256(data) != item["sha256"]:
            raise ev.EvidenceError(f"stored {name} does not match its recorded hash")
        out[name] = data
    return out


def export_capture(instance, capture_id: int) -> bytes:
    """The verifiable export of one capture (see workers.capture.evidence.verify)."""
    files = capture_artifacts(instance, capture_id)
    manifest = files.pop(ev.MANIFEST)
    signature = files.pop(ev.SIGNATURE)
    tsr = files.pop(ev.TIMESTAMP, None)
    with instance.session() as s:
        head = audit.signed_head(s, instance.private_keys())
    return ev.bundle(files, manifest, signature, tsr, audit_head=head)
