"""The evidence PDF for lawyers, from a real registration, crawl and match, read back with poppler."""
import hashlib
import json
import subprocess
import urllib.request

import pytest
from conftest import TEST_PASSPHRASE, kesu_cli, make_instance
from pipeline import register
from sites import build_site, serve_site
from sqlalchemy import select

from store.models import AuditEntry, Capture
from workers.capture.crawl import crawl, create_job
from workers.system import context

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pdfsite")
    build_site(folder)
    base, stop = serve_site(folder)
    yield base
    stop()


def test_case_pdf_holds_urls_hashes_japanese_and_attachments(tmp_path, site):
    instance = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}",
                             crawl_delay=0, crawl_idle_seconds=0.5, crawl_faces=False)
    context.set_instance(instance)
    with urllib.request.urlopen(f"{site}/img/index.png") as r:
        image = r.read()
    case_id = register(instance, image)[0]
    sha256 = hashlib.sha256(image).hexdigest()
    job = create_job(instance, f"{site}/index.html", depth=0, requested_by="test")
    crawl(instance, job)
    with instance.session() as s:
        capture = s.execute(select(Capture)).scalar_one()
        assert capture.evidence.get("artifacts"), "the matched page has evidence"

    out = tmp_path / "case.pdf"
    env = {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
           "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}
    done = kesu_cli("evidence", "export", str(case_id), "--out", str(out), env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes().startswith(b"%PDF-")
    assert out.stat().st_mode & 0o077 == 0          # decrypted captures: readable by its owner only

    text = subprocess.run(["pdftotext", "-raw", str(out), "-"], capture_output=True, text=True, check=True).stdout
    flat = "".join(text.split())
    assert f"{site}/index.html" in text and f"{site}/img/index.png" in flat
    assert sha256 in flat                                   # the hash table
    assert "証拠報告書" in text and "証拠の保管記録" in text  # Japanese, rendered as text
    assert "JST" in text and "UTC" in text and "127.0.0.1" in text

    fonts = subprocess.run(["pdffonts", str(out)], capture_output=True, text=True, check=True).stdout
    assert "CJK" in fonts or "Noto" in fonts
    assert all(line.split()[-5] == "yes" for line in fonts.splitlines()[2:] if line.strip()), fonts  # embedded

    listed = subprocess.run(["pdfdetach", "-list", str(out)], capture_output=True, text=True, check=True).stdout
    assert "capture.wacz" in listed and "manifest.json" in listed and "manifest.sig" in listed
    files = tmp_path / "attached"
    files.mkdir()
    subprocess.run(["pdfdetach", "-saveall", "-o", str(files), str(out)], check=True)
    manifest = next(files.glob("*manifest.json"))
    assert json.loads(manifest.read_text())    # extractable, intact JSON

    # The signing key's fingerprint is printed, and pins the key on another machine.
    from crypto.signing import fingerprint
    printed = fingerprint(instance.private_keys().verify_key)
    assert printed in " ".join(text.split())
    pinned = kesu_cli("evidence", "verify", str(out), "--fingerprint", printed,
                      env={"KESU_INSTANCE": str(tmp_path / "elsewhere"), "KESU_DATABASE_URL": ""})
    assert pinned.returncode == 0 and "pinned by --fingerprint" in pinned.stdout, pinned
    # `kesu evidence verify` accepts the PDF itself; one byte changed anywhere fails it.
    checked = kesu_cli("evidence", "verify", str(out), env=env)
    assert checked.returncode == 0 and "OK:" in checked.stdout and "(this instance)" in checked.stdout, checked
    raw = out.read_bytes()
    sealed_at = raw.index(b"KESU-PDF-SIGNATURE-V1:")
    for at in (len(raw) // 3, sealed_at + 40, len(raw) - 10):
        bad = tmp_path / f"bad-{at}.pdf"
        bad.write_bytes(raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:])
        refused = kesu_cli("evidence", "verify", str(bad), env=env)
        assert refused.returncode == 1 and "NOT INTACT" in refused.stderr, (at, refused.stdout, refused.stderr)
    # No timestamp token is claimed where no TSA gave one (none is configured here).
    assert "timestamp token" not in text.lower() or "no timestamp" in text.lower()

    # PDF/A-3b is declared in the metadata, and the export is audited.
    meta = subprocess.run(["pdfinfo", "-meta", str(out)], capture_output=True, text=True, check=True).stdout
    assert 'pdfaid:part="3"' in meta and 'pdfaid:conformance="B"' in meta
    with instance.session() as s:
        actions = [e.action for e in s.execute(select(AuditEntry)).scalars()]
    assert "evidence.export" in actions


def test_unknown_case_is_a_clear_error(tmp_path):
    instance = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}")
    env = {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
           "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}
    done = kesu_cli("evidence", "export", "999", "--out", str(tmp_path / "x.pdf"), env=env)
    assert done.returncode != 0 and "no case 999" in done.stderr
    assert not (tmp_path / "x.pdf").exists()


def test_after_withdrawal_a_crawl_of_the_page_matches_nothing(tmp_path, site):
    """Register, crawl (found), withdraw, crawl again: no match, and nothing of the case is kept."""
    from store import cases
    from workers.capture.crawl import report
    instance = make_instance(tmp_path / "inst", f"sqlite:///{tmp_path / 'inst' / 'kesu.db'}",
                             crawl_delay=0, crawl_idle_seconds=0.5, crawl_faces=False)
    context.set_instance(instance)
    with urllib.request.urlopen(f"{site}/img/index.png") as r:
        case_id = register(instance, r.read())[0]
    first = create_job(instance, f"{site}/index.html", depth=0, requested_by="test")
    crawl(instance, first)
    assert {m["case"] for m in report(instance, first)["matches"]} == {str(case_id)}

    cases.withdraw(instance, case_id)
    again = create_job(instance, f"{site}/index.html", depth=0, requested_by="test")
    crawl(instance, again)
    result = report(instance, again)
    assert result["pages"][0]["status"] == "ok" and result["pages"][0]["media"]
    assert result["matches"] == []
    assert not instance.keystore.exists(case_id)
