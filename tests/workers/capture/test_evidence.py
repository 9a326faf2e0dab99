"""workers.capture.evidence: WARC/WACZ of a real capture, signed manifest, and `kesu evidence verify`."""
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from sites import build_site, serve_site
from warcio.archiveiterator import ArchiveIterator

from cli.evidence import evidence_group
from crypto import CryptoError
from crypto import keys as orgkeys
from crypto.sealing import b64
from crypto.signing import fingerprint
from workers.capture import evidence as ev
from workers.capture import page as cap
from workers.capture import timestamp

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    build_site(folder)
    base, stop = serve_site(folder)
    try:
        r = cap.capture(f"{base}/gallery.html", limits=cap.Limits(page_seconds=30, idle_seconds=0.8),
                        allow_private=True)
    finally:
        stop()
    assert r.status == "ok"
    return r


@pytest.fixture(scope="module")
def keys():
    return orgkeys.generate()


def _export(result, keys, tsr=None):
    warc = ev.build_warc(result)
    artifacts = {"capture.wacz": ev.build_wacz(warc, result), "screenshot.png": result.screenshot,
                 "page.mhtml": result.mhtml, "page.html": result.html}
    manifest = ev.build_manifest(result, artifacts, operator="test", case="7", job=1, keys=keys)
    body, sig = ev.sign_manifest(manifest, keys)
    return ev.bundle(artifacts, body, sig, tsr), artifacts, manifest


def test_wacz_validates_and_holds_every_response(result, tmp_path):
    warc = ev.build_warc(result)
    wacz = ev.build_wacz(warc, result)
    path = tmp_path / "capture.wacz"
    path.write_bytes(wacz)
    ok, out = ev.validate_wacz(path)
    assert ok, out
    # the wacz package's own command line agrees
    run = subprocess.run([sys.executable, "-m", "wacz", "validate", "-f", str(path)], capture_output=True, text=True)
    assert run.returncode == 0 and "valid" in run.stdout, run.stdout + run.stderr
    assert ev.wacz_internal_problems(wacz) == []
    # every body the browser received is in the WARC, byte for byte, with the server IP
    payloads = {}
    for record in ArchiveIterator(io.BytesIO(warc)):
        if record.rec_type == "response":
            payloads[record.rec_headers.get_header("WARC-Target-URI")] = hashlib.sha256(
                record.content_stream().read()).hexdigest()
            assert record.rec_headers.get_header("WARC-IP-Address") == "127.0.0.1", record.rec_headers.get_header("WARC-Target-URI")
    for m in result.media:
        if m["source"] == "browser":
            assert payloads[m["url"]] == m["sha256"], m["url"]
    assert payloads[result.final_url] == hashlib.sha256(result.html).hexdigest()


def test_signed_manifest_verifies_and_any_flipped_byte_is_caught(result, keys, tmp_path):
    data, artifacts, manifest = _export(result, keys)
    path = tmp_path / "capture.zip"
    path.write_bytes(data)
    rep = ev.verify(path, keys.verify_key)
    assert rep["ok"], rep["problems"]
    assert rep["signed_by"]["key_id"] == keys.key_id
    assert manifest["capture"]["server_ip"] == "127.0.0.1" and manifest["capture"]["redirects"] == []
    assert manifest["artifacts"]["capture.wacz"]["sha256"] == hashlib.sha256(artifacts["capture.wacz"]).hexdigest()
    assert {m["url"] for m in manifest["media"]} == {m["url"] for m in result.media}
    assert manifest["tool"]["kesu"] and manifest["browser"].startswith("chrome")
    # the export is byte-for-byte reproducible from its parts
    import zipfile
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert ev.pack({n: z.read(n) for n in z.namelist()}) == data
    # another key: refused
    assert not ev.verify(path, orgkeys.generate().verify_key)["ok"]
    # a changed byte anywhere (headers, each artifact, manifest, signature, central directory)
    positions = set(range(0, len(data), max(1, len(data) // 60)))
    for needle in (b'"server_ip"', b'"signature"', b"PK\x01\x02", b"WARC/1.1", b"IHDR", b"<html"):
        at = data.find(needle)
        if at >= 0:
            positions.add(at + 2)
    positions |= {len(data) - 1, len(data) - 10, len(data) // 2}
    for pos in sorted(positions):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        path.write_bytes(bytes(bad))
        assert not ev.verify(path, keys.verify_key)["ok"], f"flip at byte {pos} went unnoticed"


def test_verify_command(result, keys, tmp_path):
    data, _, _ = _export(result, keys)
    path = tmp_path / "export.zip"
    path.write_bytes(data)
    runner = CliRunner()
    ok = runner.invoke(evidence_group, ["verify", str(path), "--key", b64(keys.verify_key)])
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    rep = runner.invoke(evidence_group, ["verify", str(path), "--key", b64(keys.verify_key), "--json"])
    assert json.loads(rep.output)["ok"] is True
    bad = bytearray(data)
    bad[len(bad) // 3] ^= 0xFF
    path.write_bytes(bytes(bad))
    res = runner.invoke(evidence_group, ["verify", str(path), "--key", b64(keys.verify_key)])
    assert res.exit_code == 1


def test_a_forged_export_fails_verify(result, keys, tmp_path):
    """A fabricated capture signed with a fresh key is intact as a file, and still refused:
    the key inside the file proves nothing until it is pinned."""
    forger = orgkeys.generate()
    forged, _, _ = _export(dataclasses.replace(result, server_ip="198.51.100.66"), forger)
    path = tmp_path / "forged.zip"
    path.write_bytes(forged)
    genuine = tmp_path / "genuine.zip"
    genuine.write_bytes(_export(result, keys)[0])
    nowhere = {"KESU_INSTANCE": str(tmp_path / "no-instance"), "KESU_DATABASE_URL": ""}
    runner = CliRunner(env=nowhere)
    ours = fingerprint(keys.verify_key)
    # No pin at all (no --fingerprint, no instance in reach): refused, and told why.
    res = runner.invoke(evidence_group, ["verify", str(path)])
    assert res.exit_code == 1 and "not pinned" in res.output, res.output
    # Pinned to our key by its printed fingerprint: the forgery names its own key.
    res = runner.invoke(evidence_group, ["verify", str(path), "--fingerprint", ours])
    assert res.exit_code == 1 and "not the pinned one" in res.output and fingerprint(forger.verify_key) in res.output
    assert ev.verify(path, ev.Pin([keys.verify_key]))["ok"] is False
    # The genuine export passes with the fingerprint, in full or its first 32 hex digits.
    for given in (ours, ours.replace(" ", "")[:32].upper()):
        res = runner.invoke(evidence_group, ["verify", str(genuine), "--fingerprint", given])
        assert res.exit_code == 0 and ours in res.output, res.output
    assert runner.invoke(evidence_group, ["verify", str(genuine), "--fingerprint", ours[:20]]).exit_code == 1
    assert runner.invoke(evidence_group, ["verify", str(genuine)]).exit_code == 1    # intact, but not pinned


def test_verify_keys_are_derived_from_the_seed():
    """A bundle whose clear verify key was swapped does not unlock (crypto/keys.py)."""
    org = orgkeys.generate()
    stored = orgkeys.wrap(org, "a passphrase", *orgkeys.KDF_PROFILES["interactive"])
    assert orgkeys.unwrap(stored, "a passphrase").verify_key == org.verify_key
    swapped = dict(stored, verify_key=b64(orgkeys.generate().verify_key))
    with pytest.raises(CryptoError):
        orgkeys.unwrap(swapped, "a passphrase")


@pytest.fixture
def local_tsa(tmp_path):
    """`openssl ts -reply` acting as an RFC 3161 TSA over HTTP on 127.0.0.1."""
    import http.server
    import threading
    d = tmp_path / "tsa"
    d.mkdir()

    def sh(*args):
        subprocess.run(args, cwd=d, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=kesu test CA", "-days", "2",
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    sh("openssl", "req", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=kesu test TSA")
    (d / "ext.cnf").write_text("extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,digitalSignature\n")
    sh("openssl", "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "tsa.pem", "-days", "2", "-extfile", "ext.cnf")
    (d / "serial").write_text("01\n")
    (d / "tsa.cnf").write_text(f"""[ tsa ]
default_tsa = tsa1
[ tsa1 ]
serial = {d}/serial
crypto_device = builtin
signer_cert = {d}/tsa.pem
signer_key = {d}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256
accuracy = secs:1
ordering = yes
tsa_name = no
ess_cert_id_alg = sha256
""")
    lock = threading.Lock()

    class TSA(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            query = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                (d / "q.tsq").write_bytes(query)
                subprocess.run(["openssl", "ts", "-reply", "-config", str(d / "tsa.cnf"), "-queryfile", "q.tsq",
                                "-out", "r.tsr"], cwd=d, check=True, capture_output=True)
                reply = (d / "r.tsr").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TSA)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tsa", d
    server.shutdown()


def _other_ca(tmp_path) -> Path:
    """A CA that vouches for nothing here."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "some other CA")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_rfc3161_timestamp_from_a_local_tsa(result, keys, tmp_path, local_tsa):
    url, tsa_dir = local_tsa
    roots = timestamp.load_roots(tsa_dir / "ca.pem")
    warc = ev.build_warc(result)
    artifacts = {"capture.wacz": ev.build_wacz(warc, result), "page.html": result.html}
    body, sig = ev.sign_manifest(ev.build_manifest(result, artifacts, keys=keys), keys)
    tsr = timestamp.request(url, body, roots)
    (tmp_path / "manifest.json").write_bytes(body)
    (tmp_path / "manifest.tsr").write_bytes(tsr)
    check = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "manifest.json"),
                            "-in", str(tmp_path / "manifest.tsr"), "-CAfile", str(tsa_dir / "ca.pem"),
                            "-untrusted", str(tsa_dir / "tsa.pem")], capture_output=True, text=True)
    assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
    path = tmp_path / "stamped.zip"
    path.write_bytes(ev.bundle(artifacts, body, sig, tsr))
    rep = ev.verify(path, keys.verify_key, tsa_roots=roots)
    assert rep["ok"], rep["problems"]
    assert rep["timestamp"]["tsa"] == "CN=kesu test TSA"
    # Without the TSA's CA nothing vouches for the token's signer: not accepted, and told why.
    rep = ev.verify(path, keys.verify_key)
    assert not rep["ok"] and "cannot be checked without the TSA's CA certificate" in rep["problems"][0]
    # A CA that did not issue the TSA's certificate: refused.
    rep = ev.verify(path, keys.verify_key, tsa_roots=timestamp.load_roots(_other_ca(tmp_path)))
    assert not rep["ok"] and "timestamp does not verify" in rep["problems"][0]
    # A real token over another manifest: refused, with the reason.
    path.write_bytes(ev.bundle(artifacts, body, sig, timestamp.request(url, body + b" ", roots)))
    rep = ev.verify(path, keys.verify_key, tsa_roots=roots)
    assert not rep["ok"] and "message imprint differs" in " ".join(rep["problems"])


def test_a_forged_timestamp_token_fails_verify(result, keys, tmp_path, local_tsa):
    """What the old check accepted (a granted status byte and the digest somewhere in the
    bytes), and a real token whose imprint was patched to this manifest's digest."""
    url, tsa_dir = local_tsa
    artifacts = {"page.html": result.html}
    body, sig = ev.sign_manifest(ev.build_manifest(result, artifacts, keys=keys), keys)
    digest = hashlib.sha256(body).digest()
    crafted = bytes.fromhex("3005300302010030") + b"\x04\x20" + digest          # status granted + the digest
    other = timestamp.request(url, b"another manifest", timestamp.load_roots(tsa_dir / "ca.pem"))
    patched = other.replace(hashlib.sha256(b"another manifest").digest(), digest)
    assert patched != other
    path = tmp_path / "stamped.zip"
    for token, reason in ((crafted, "not an RFC 3161 timestamp response"), (patched, "timestamp does not verify")):
        path.write_bytes(ev.bundle(artifacts, body, sig, token))
        res = CliRunner().invoke(evidence_group, ["verify", str(path), "--key", b64(keys.verify_key),
                                                  "--tsa-ca", str(tsa_dir / "ca.pem")])
        assert res.exit_code == 1 and reason in res.output, res.output


def test_partial_verification_of_attached_files(result, keys):
    """What an evidence PDF attaches (WACZ, manifest, signature) verifies on its own."""
    data, artifacts, _ = _export(result, keys)
    import zipfile
    files = {n: zipfile.ZipFile(io.BytesIO(data)).read(n) for n in (ev.MANIFEST, ev.SIGNATURE, "capture.wacz")}
    rep = ev.verify_files(files, keys.verify_key, partial=True)
    assert rep["ok"], rep["problems"]
    assert rep["artifacts"]["screenshot.png"] == "not included" and rep["artifacts"]["capture.wacz"] == "ok"
    assert not ev.verify_files(files, keys.verify_key)["ok"]          # not partial: missing files fail
    bad = bytearray(files["capture.wacz"])
    bad[100] ^= 0x01
    assert not ev.verify_files({**files, "capture.wacz": bytes(bad)}, keys.verify_key, partial=True)["ok"]


_OPENS: list | None = None


def _watch_opens(event, args):
    """An audit hook (it cannot be removed, so it records only while a test asks it to)."""
    if _OPENS is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else \
            bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        _OPENS.append((path, os.path.realpath(path), writes))


sys.addaudithook(_watch_opens)


def test_wacz_is_built_without_plaintext_on_disk(result, tmp_path, monkeypatch):
    """Issue 14 item 9: the WARC, page list and WACZ are never written to a disk file, even with
    a body large enough that warcio (512 KiB) and cdxj-indexer (64 KiB) spill their buffers, and
    a killed worker leaves nothing behind in TMPDIR (an empty folder we inspect)."""
    global _OPENS
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(spool)          # (probes the folder before we watch)
    big = os.urandom(700 * 1024)
    first = result.exchanges[0]
    result = dataclasses.replace(result, exchanges=[*result.exchanges, dataclasses.replace(
        first, request_id="big", url=first.url.rsplit("/", 1)[0] + "/big.jpg", mime="image/jpeg",
        headers={"Content-Type": "image/jpeg"}, body=big)])
    _OPENS = []
    try:
        warc = ev.build_warc(result)
        wacz = ev.build_wacz(warc, result)
    finally:
        opened, _OPENS = _OPENS, None
    assert ev.wacz_internal_problems(wacz) == []
    with zipfile.ZipFile(io.BytesIO(wacz)) as z:
        bodies = [r.content_stream().read() for r in ArchiveIterator(io.BytesIO(z.read("archive/capture.warc.gz")))
                  if r.rec_type == "response"]
    assert big in bodies
    on_disk = [(path, real) for path, real, writes in opened
               if writes and not real.startswith(("/proc/", "/memfd:", "/dev/shm/"))]
    assert on_disk == [], f"plaintext written to disk files: {on_disk}"
    assert any(real.startswith("/proc/") or "memfd:" in real for _, real, _ in opened)
    assert [p for p in spool.rglob("*")] == []
    assert not any(p.name.startswith("kesu-wacz-") for p in Path("/dev/shm").iterdir())
