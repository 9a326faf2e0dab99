"""Evidence of one capture: WARC/WACZ, manifest, signature, timestamp, and their checking.

A capture's evidence is a set of artifacts (`capture.wacz` with every response the browser
received, `screenshot.png` with the UTC time drawn on it, `page.mhtml`, `page.html`), a
manifest that names each artifact with its SHA-256 together with the URLs, times, server IP,
redirect chain, tool and browser versions, operator and case, an Ed25519 signature over the
manifest (canonical JSON, `crypto.signing`), and, when a TSA is configured, an RFC 3161
timestamp token over the manifest's SHA-256 (`workers.capture.timestamp`).

Verification trusts no key found inside the file: the signing key must be pinned from
outside (its fingerprint, printed in every evidence PDF and notice, or the instance's keys).

An export is a ZIP written byte for byte the same way every time (stored, fixed dates, fixed
order), so `verify` can rebuild it from the verified parts and compare: any changed byte
of the file (an artifact, the manifest, the signature or the ZIP structure) is detected.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import tempfile
import threading
import zipfile
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from crypto import CryptoError
from crypto.sealing import b64, unb64
from crypto.signing import canonical, fingerprint, fingerprint_matches, sign
from crypto.signing import verify as verify_signature
from workers.capture import timestamp

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
TIMESTAMP = "manifest.tsr"
AUDIT_HEAD = "audit-head.json"     # the audit log's head when exported, signed (store.audit.signed_head)
ARTIFACTS = ("capture.wacz", "screenshot.png", "page.mhtml", "page.html")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class EvidenceError(RuntimeError):
    pass


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return "unknown"


def tool_versions() -> dict:
    return {"kesu": _version("kesu"), "selenium": _version("selenium"), "warcio": _version("warcio"),
            "wacz": _version("wacz"), "python": platform.python_version()}


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- WARC and WACZ ------------------------------------------------------------------------

_HOP = {"content-encoding", "transfer-encoding", "content-length", "connection", "keep-alive"}


def _header_list(headers: dict) -> list[tuple[str, str]]:
    out = []
    for name, value in (headers or {}).items():
        if name.startswith(":"):
            continue
        for line in str(value).split("\n"):
            out.append((name, line.encode("latin-1", "replace").decode("latin-1")))
    return out


def _memory_warc_writer():
    from warcio.warcwriter import WARCWriter

    class MemoryWARCWriter(WARCWriter):
        """warcio buffers a body it digests in a SpooledTemporaryFile (to disk over 512 KiB):
        here, in memory."""
        @staticmethod
        def _create_temp_file():
            return io.BytesIO()
    return MemoryWARCWriter


def build_warc(result) -> bytes:
    """Every exchange the capture recorded as WARC request/response records (gzip)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.timeutils import datetime_to_iso_date
    buf = io.BytesIO()
    writer = _memory_warc_writer()(buf, gzip=True, warc_version="WARC/1.1")
    versions = tool_versions()
    writer.write_record(writer.create_warcinfo_record("capture.warc.gz", {
        "software": f"kesu {versions['kesu']} (warcio {versions['warcio']}); {result.browser}",
        "format": "WARC File Format 1.1",
        "http-header-user-agent": result.user_agent or "",
        "isPartOf": result.url,
    }))
    for ex in result.exchanges:
        if ex.status is None:
            continue
        when = datetime.fromtimestamp(ex.started or result.captured_at.timestamp(), timezone.utc)
        date = datetime_to_iso_date(when.replace(tzinfo=None), use_micros=True)
        parts = urlsplit(ex.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        req_body = (ex.post_data or "").encode("utf-8")
        req = writer.create_warc_record(
            ex.url, "request", payload=io.BytesIO(req_body), length=len(req_body),
            http_headers=StatusAndHeaders(f"{ex.method} {target} HTTP/1.1", _header_list(ex.request_headers),
                                          is_http_request=True),
            warc_headers_dict={"WARC-Date": date})
        body = ex.body or b""
        headers = [(k, v) for k, v in _header_list(ex.headers) if k.lower() not in _HOP]
        headers.append(("Content-Length", str(len(body))))
        for k, v in _header_list(ex.headers):
            if k.lower() == "content-encoding":
                headers.append(("X-Kesu-Original-Content-Encoding", v))   # the body below is decoded
        reason = ex.status_text or (HTTPStatus(ex.status).phrase if ex.status in HTTPStatus._value2member_map_ else "")
        warc_headers = {"WARC-Date": date}
        if ex.remote_ip:
            warc_headers["WARC-IP-Address"] = ex.remote_ip.strip("[]")
        if ex.truncated or ex.body is None:
            warc_headers["WARC-Truncated"] = "length"
        resp = writer.create_warc_record(
            ex.url, "response", payload=io.BytesIO(body), length=len(body),
            http_headers=StatusAndHeaders(f"{ex.status} {reason}".strip(), headers, protocol="HTTP/1.1"),
            warc_headers_dict=warc_headers)
        writer.write_record(req)
        writer.write_record(resp)
    return buf.getvalue()


MEMORY_FS = Path("/dev/shm")
_spool_lock = threading.Lock()


def _memory_fs() -> Path:
    """A RAM-backed folder (tmpfs) for what libraries spill to temporary files, or an error."""
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        mounts = ""
    if not any(line.split()[1:3] == [str(MEMORY_FS), "tmpfs"] for line in mounts.splitlines() if line.strip()):
        raise EvidenceError(f"no tmpfs at {MEMORY_FS}: kesu will not spool evidence to a disk in clear")
    return MEMORY_FS


@contextlib.contextmanager
def _memory_files(names: dict[str, bytes]):
    """Files the wacz tool can open by name whose bytes never reach a disk.

    Each is an anonymous memory file (Linux memfd), reached through a symlink of the wanted
    name in a private folder; should the worker be killed, the memory goes with the process
    and what is left is dangling links. What warcio and cdxj-indexer spill from their
    SpooledTemporaryFile buffers (bodies over 64 KiB) goes, for the duration, to the same
    private folder on tmpfs (RAM), as unlinked temporary files. Yields {name: path}."""
    if not hasattr(os, "memfd_create"):
        raise EvidenceError("building a WACZ in memory needs Linux memfd_create")
    fds: list[int] = []
    with _spool_lock, tempfile.TemporaryDirectory(prefix="kesu-wacz-", dir=_memory_fs()) as tmp:
        saved, tempfile.tempdir = tempfile.tempdir, tmp
        try:
            paths = {}
            for name, data in names.items():
                fd = os.memfd_create(f"kesu-{name}", os.MFD_CLOEXEC)
                fds.append(fd)
                with open(fd, "wb", closefd=False) as fh:
                    fh.write(data)
                link = Path(tmp) / name
                os.symlink(f"/proc/{os.getpid()}/fd/{fd}", link)
                paths[name] = link
            yield paths
        finally:
            tempfile.tempdir = saved
            for fd in fds:
                os.close(fd)


def _read_memory_file(link: Path) -> bytes:
    with open(link, "rb") as fh:
        return fh.read()


def build_wacz(warc: bytes, result) -> bytes:
    """Package the WARC as WACZ 1.1.1 (index, page list, datapackage with SHA-256 of each file),
    in memory: the plaintext WARC, page list and WACZ never touch the disk (`_memory_files`)."""
    from wacz.main import main as wacz_main
    page = {"url": result.final_url or result.url, "ts": iso(result.captured_at),
            "title": (result.final_url or result.url)[:200]}
    pages = (json.dumps({"format": "json-pages-1.0", "id": "pages", "title": "Pages"}) + "\n"
             + json.dumps(page) + "\n").encode("utf-8")
    files = {"capture.warc.gz": warc, "pages.jsonl": pages, "capture.wacz": b""}
    with _memory_files(files) as paths:
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):      # the wacz tool prints; our stdout is the JSON report
            rc = wacz_main(["create", "-o", str(paths["capture.wacz"]), str(paths["capture.warc.gz"]),
                            "-p", str(paths["pages.jsonl"]), "--hash-type", "sha256",
                            "--title", "kesu capture", "--url", page["url"]])
        out = _read_memory_file(paths["capture.wacz"])
        if rc not in (0, None) or not out:
            raise EvidenceError(f"wacz create failed: {sink.getvalue()[-500:]}")
        return out


def validate_wacz(path) -> tuple[bool, str]:
    """The wacz package's own validation (the checks `wacz validate` runs)."""
    from wacz.util import WACZ_VERSION
    from wacz.validate import OUTDATED_WACZ, Validation
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        try:
            v = Validation(str(path))
            if v.version not in (WACZ_VERSION, OUTDATED_WACZ):
                return False, sink.getvalue()
            for check in (v.check_required_contents, v.frictionless_validate, v.check_file_paths,
                          v.check_file_hashes, v.check_data_package_hash_and_sig):
                if check() is False:
                    return False, sink.getvalue()
        except Exception as exc:
            return False, f"{sink.getvalue()}\n{exc}"
    return True, sink.getvalue()


def wacz_internal_problems(data: bytes) -> list[str]:
    """Fast check of a WACZ's own datapackage: every listed file present with its hash."""
    problems = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        package = json.loads(z.read("datapackage.json"))
        digest = json.loads(z.read("datapackage-digest.json")) if "datapackage-digest.json" in z.namelist() else None
        if digest and digest.get("hash") != "sha256:" + sha256(z.read("datapackage.json")):
            problems.append("WACZ datapackage.json does not match datapackage-digest.json")
        listed = set()
        for res in package.get("resources", []):
            listed.add(res["path"])
            algo, _, want = res.get("hash", "").partition(":")
            got = hashlib.new(algo or "sha256", z.read(res["path"])).hexdigest()
            if got != want:
                problems.append(f"WACZ {res['path']} hash differs")
        extra = set(z.namelist()) - listed - {"datapackage.json", "datapackage-digest.json"}
        if extra:
            problems.append(f"WACZ holds unlisted files: {sorted(extra)}")
    return problems


# --- manifest, signature, timestamp -------------------------------------------------------------

def build_manifest(result, artifacts: dict, *, operator: str = "", case: str | None = None,
                   job: int | None = None, keys=None, metadata_only: bool = False,
                   media_kept: set | None = None, proxy: bool = False) -> dict:
    media_kept = media_kept or set()
    manifest = {
        "kesu_manifest": 1,
        "tool": tool_versions(),
        "browser": result.browser,
        "user_agent": result.user_agent,
        "operator": operator,
        "case": case,
        "job": job,
        "capture": {
            "url": result.url, "final_url": result.final_url, "status": result.status,
            "http_status": result.http_status, "error": result.error, "server_ip": result.server_ip,
            "redirects": result.redirects, "captured_at": iso(result.captured_at),
            "elapsed_s": round(result.elapsed, 3), "limits_hit": list(result.limits_hit),
            "blocked": list(result.blocked)[:100],
        },
        "media": [{"url": m["url"], "sha256": m["sha256"], "mime": m["mime"], "bytes": m["bytes"],
                   "truncated": bool(m.get("truncated")), "kept": m["sha256"] in media_kept}
                  for m in result.media],
        "metadata_only": metadata_only,
        # through a proxy, the browser's server_ip is the proxy's address, not the site's
        "network": {"proxy": bool(proxy)},
        "artifacts": {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in sorted(artifacts.items())},
        "signed_at": iso(datetime.now(timezone.utc)),
    }
    if keys is not None:
        manifest["signing"] = {"alg": "ed25519", "key_id": keys.key_id, "verify_key": b64(keys.verify_key)}
    return manifest


def sign_manifest(manifest: dict, keys) -> tuple[bytes, bytes]:
    """(manifest bytes, signature document bytes): canonical JSON and its Ed25519 signature."""
    body = canonical(manifest)
    sig = {"alg": "ed25519", "key_id": keys.key_id, "verify_key": b64(keys.verify_key),
           "signature": sign(keys.signing_key, manifest), "manifest_sha256": sha256(body)}
    return body, canonical(sig)


class Pin:
    """The signing keys a verification accepts, and how they came to be trusted. A signature
    is worth only as much as the key behind it: a forger signs with a key of their own, so
    the key inside the file proves nothing until it is pinned from outside the file."""

    def __init__(self, keys=(), fingerprints=(), source: str = ""):
        self.keys = [bytes(k) for k in keys]
        self.fingerprints = [f for f in fingerprints if f]
        self.source = source

    def __bool__(self) -> bool:
        return bool(self.keys or self.fingerprints)

    def accepts(self, key: bytes) -> bool:
        return key in self.keys or any(fingerprint_matches(f, key) for f in self.fingerprints)


NOT_PINNED = ("the signing key is not pinned: give --fingerprint (printed in the evidence PDF and in "
              "every notice), or run this where the instance that signed it is")


def pin_problem(pin: "Pin | bytes | None", key: bytes) -> str | None:
    """Why `key` may not be trusted (None when it may)."""
    if isinstance(pin, (bytes, bytearray)):
        pin = Pin([pin], source="--key")
    if not pin:
        return NOT_PINNED
    if not pin.accepts(key):
        return (f"signed by a key that is not the pinned one (its fingerprint: {fingerprint(key)};"
                f" accepted: {pin.source or 'keys given by the caller'})")
    return None


# --- export bundle and verification ---------------------------------------------------------

def pack(files: dict[str, bytes]) -> bytes:
    """A ZIP written the same way every time: manifest first, then names in order, stored."""
    order = [n for n in (MANIFEST, SIGNATURE, TIMESTAMP, AUDIT_HEAD) if n in files] + sorted(
        n for n in files if n not in (MANIFEST, SIGNATURE, TIMESTAMP, AUDIT_HEAD))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name in order:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, files[name])
    return buf.getvalue()


def bundle(artifacts: dict[str, bytes], manifest: bytes, signature: bytes, tsr: bytes | None = None,
           audit_head: dict | None = None) -> bytes:
    files = dict(artifacts)
    files[MANIFEST] = manifest
    files[SIGNATURE] = signature
    if tsr:
        files[TIMESTAMP] = tsr
    if audit_head:
        files[AUDIT_HEAD] = canonical(audit_head)
    return pack(files)


def _audit_head_problems(data: bytes, pin) -> tuple[dict | None, list[str]]:
    """The signed audit head an export carries, checked like the manifest's signature."""
    try:
        head = json.loads(data)
        key = unb64(head["verify_key"])
        verify_signature(key, {k: v for k, v in head.items() if k != "signature"}, head["signature"])
    except (CryptoError, KeyError, TypeError, ValueError) as exc:
        return None, [f"the audit head does not verify: {exc}"]
    untrusted = pin_problem(pin, key)
    return head, ([f"audit head: {untrusted}"] if untrusted else [])


def verify(path, pin: Pin | bytes | None = None, tsa_roots: list | None = None) -> dict:
    """Check an exported capture (or a bare WACZ). Returns a report; report["ok"] is the verdict."""
    path = Path(path)
    report = {"file": str(path), "ok": False, "problems": [], "signed_by": None, "artifacts": {}}
    try:
        raw = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            names = z.namelist()
            files = {n: z.read(n) for n in names}       # a CRC error raises here
    except Exception as exc:
        report["problems"].append(f"not a readable ZIP: {exc}")
        return report
    if MANIFEST not in files and "datapackage.json" in files:
        report["kind"] = "wacz"
        report["problems"].extend(wacz_internal_problems(raw))
        report["problems"].append("a bare WACZ carries no kesu signature: verify the export it came with")
        return report
    report.update(verify_files(files, pin, tsa_roots=tsa_roots))
    report["file"] = str(path)
    if len(set(names)) != len(names):
        report["problems"].append("duplicate names in the ZIP")
    if not report["problems"] and pack(files) != raw:
        report["problems"].append("the ZIP container was altered (it differs from the canonical export)")
    report["ok"] = not report["problems"]
    return report


def verify_files(files: dict[str, bytes], pin: Pin | bytes | None = None, partial: bool = False,
                 tsa_roots: list | None = None) -> dict:
    """Check a capture's evidence files: canonical manifest, Ed25519 signature by a pinned key,
    each artifact's SHA-256, the WACZ's own hashes, the RFC 3161 token (its CMS signature and
    imprint). With `partial`, artifacts that are absent (an evidence PDF attaches only some)
    are listed as such instead of failing."""
    report = {"kind": "capture", "ok": False, "problems": [], "signed_by": None, "artifacts": {}}
    problems = report["problems"]
    if MANIFEST not in files or SIGNATURE not in files:
        problems.append("manifest or signature missing")
        return report
    try:
        manifest = json.loads(files[MANIFEST])
        sig = json.loads(files[SIGNATURE])
    except ValueError as exc:
        problems.append(f"manifest or signature is not JSON: {exc}")
        return report
    if canonical(manifest) != files[MANIFEST]:
        problems.append("manifest is not in canonical form (edited)")
    if canonical(sig) != files[SIGNATURE]:
        problems.append("signature file is not in canonical form (edited)")
    try:
        key = unb64(sig["verify_key"])
        untrusted = pin_problem(pin, key)
        if untrusted:
            problems.append(untrusted)
        if (manifest.get("signing") or {}).get("verify_key") not in (None, sig["verify_key"]):
            problems.append("manifest names a different signing key")
        verify_signature(key, manifest, sig["signature"])
        report["signed_by"] = {"key_id": sig.get("key_id"), "verify_key": sig["verify_key"],
                               "fingerprint": fingerprint(key)}
    except (CryptoError, KeyError, ValueError, TypeError) as exc:
        problems.append(f"signature does not verify: {exc}")
    if sig.get("manifest_sha256") != sha256(files[MANIFEST]):
        problems.append("signature document names another manifest")
    listed = manifest.get("artifacts", {}) if isinstance(manifest, dict) else {}
    for name, meta in listed.items():
        data = files.get(name)
        if data is None:
            report["artifacts"][name] = "not included"
            if not partial:
                problems.append(f"{name} missing")
            continue
        ok = sha256(data) == meta.get("sha256") and len(data) == meta.get("bytes")
        report["artifacts"][name] = "ok" if ok else "changed"
        if not ok:
            problems.append(f"{name} changed (SHA-256 differs from the signed manifest)")
        elif name.endswith(".wacz"):
            try:
                problems.extend(wacz_internal_problems(data))
            except Exception as exc:
                problems.append(f"{name} unreadable: {exc}")
    extra = set(files) - set(listed) - {MANIFEST, SIGNATURE, TIMESTAMP, AUDIT_HEAD}
    if AUDIT_HEAD in files:
        report["audit_head"], head_problems = _audit_head_problems(files[AUDIT_HEAD], pin)
        problems.extend(head_problems)
    if extra:
        problems.append(f"files not named in the manifest: {sorted(extra)}")
    if TIMESTAMP in files:
        try:
            report["timestamp"] = timestamp.check(files[TIMESTAMP], files[MANIFEST], tsa_roots)
        except timestamp.TimestampError as exc:
            problems.append(str(exc))
    if isinstance(manifest, dict):
        report["manifest"] = {k: manifest.get(k) for k in ("capture", "case", "operator", "browser", "tool")}
    report["ok"] = not problems
    return report
