"""workers.capture.crawl end to end: real Chromium, a real instance (SQLite, and PostgreSQL when set),
real blobs; a job killed with SIGKILL mid-write and retried."""
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from sites import EXPECTED, build_site, serve_site
from sqlalchemy import select

from crypto import envelope
from crypto.sealing import unseal
from store.config import load
from store.instance import Instance
from store.models import Capture, Case, CrawlJob, Match, Media
from workers.capture import evidence as ev
from workers.capture.crawl import crawl, create_job, export_capture, report

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[3]
PASSPHRASE = "test passphrase"
SETTINGS = dict(crawl_allow_private=True, crawl_delay=0, crawl_page_seconds=20, crawl_idle_seconds=0.8,
                crawl_faces=0)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    hashes = build_site(folder)
    base, stop = serve_site(folder)
    yield base, hashes
    stop()


@pytest.fixture
def instance(tmp_path, database_url):
    inst = Instance(load(tmp_path / "instance", database_url=database_url, **SETTINGS))
    inst.init(PASSPHRASE)
    return inst


def _cases(inst):
    with inst.session() as s:
        adult = Case(number_hash="a" * 64, passphrase_hash="x", category="adult_ncii")
        minor = Case(number_hash="b" * 64, passphrase_hash="x", category="minor")
        s.add_all([adult, minor])
        s.flush()
        return adult.id, minor.id


class ShaMatcher:
    """An exact SHA-256 matcher, so this test decides which page matches which case; the real
    matcher runs end to end in test_kesu_crawl_wait_prints_the_report."""

    def __init__(self, table):
        self.table = table

    def __call__(self, instance, signals):
        case = self.table.get(signals["sha256"])
        return [{"case": case, "kind": "sha256", "distance": 0, "confidence": 1.0}] if case else []


def _blob_files(inst):
    if inst.settings.blobs_in_database:        # PostgreSQL: the blobs table, not files
        from store.models import BlobRow
        with inst.session() as s:
            return set(s.execute(select(BlobRow.name)).scalars())
    root = inst.settings.blob_dir
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _referenced(inst):
    names = set()
    with inst.session() as s:
        for c in s.execute(select(Capture)).scalars():
            for item in (c.evidence or {}).get("artifacts", {}).values():
                names.add(item["blob"])
            for m in c.media:
                if m.blob:
                    names.add(m.blob)
    return names


def _check_blobs(inst):
    """Every blob on disk belongs to a finished capture and decrypts whole to its recorded hash."""
    files = _blob_files(inst)
    assert not [n for n in files if n.startswith(".tmp-")], "half-written blob left behind"
    assert files == _referenced(inst)
    keys = inst.private_keys()
    with inst.session() as s:
        for c in s.execute(select(Capture)).scalars():
            assert c.status != "pending"
            if not c.data_key:
                continue
            key = unseal(keys.private_key, c.data_key)
            for item in c.evidence["artifacts"].values():
                assert ev.sha256(inst.blobs.get(key, item["blob"])) == item["sha256"]
            for m in c.media:
                if m.blob:
                    inst.blobs.get(key, m.blob)


def test_crawl_depth_one_writes_what_design_allows(instance, site, database_url):
    base, hashes = site
    adult, minor = _cases(instance)
    matcher = ShaMatcher({hashes["img/a.png"]: adult, hashes["img/index.png"]: minor})
    job = create_job(instance, f"{base}/index.html", depth=1, requested_by="test")
    seen = []
    stats = crawl(instance, job, progress=seen.append, matcher=matcher)
    assert stats["pages"] == 4 and stats["stopped"] is None and len(seen) == 4

    rep = report(instance, job)
    json.dumps(rep)
    pages = {p["url"]: p for p in rep["pages"]}
    assert set(pages) == {f"{base}/{p}" for p in ("index.html", "gallery.html", "video.html", "hls.html")}
    for name, wanted in EXPECTED.items():
        page = pages[f"{base}/{name}"]
        assert page["status"] == "ok" and page["error"] is None and page["final_url"] == f"{base}/{name}"
        got = {m["url"].replace("localhost", "127.0.0.1"): m for m in page["media"]}
        for path in wanted:
            m = got[f"{base}/{path}"]
            assert m["sha256"] == hashes[path] and m["bytes"] > 0 and m["mime"]
    assert sorted((m["case"], m["page"], m["url"], m["kind"]) for m in rep["matches"]) == sorted([
        (str(adult), f"{base}/gallery.html", f"{base}/img/a.png", "sha256"),
        (str(minor), f"{base}/index.html", f"{base}/img/index.png", "sha256")])
    for m in rep["matches"]:
        assert m["distance"] == 0 and m["confidence"] == 1.0 and len(m["sha256"]) == 64

    with instance.session() as s:
        caps = {c.url: c for c in s.execute(select(Capture).where(Capture.job_id == job)).scalars()}
        gallery, index = caps[f"{base}/gallery.html"], caps[f"{base}/index.html"]
        # matched page: full evidence, the matched media's bytes, nothing of the rest
        assert set(gallery.evidence["artifacts"]) == {"capture.wacz", "screenshot.png", "page.mhtml", "page.html",
                                                      "manifest.json", "manifest.sig"}
        assert [m.url for m in gallery.media if m.blob] == [f"{base}/img/a.png"]
        # minor-category match: metadata only, no bytes, no screenshot
        assert index.evidence["metadata_only"] is True
        assert set(index.evidence["artifacts"]) == {"manifest.json", "manifest.sig"}
        assert all(m.blob is None for m in index.media)
        # pages that matched nothing: signals and URLs only
        for url in (f"{base}/video.html", f"{base}/hls.html"):
            assert caps[url].data_key is None and "artifacts" not in caps[url].evidence
            assert all(m.blob is None and m.signals for m in caps[url].media)
        # media named by HMAC, signals sealed
        for m in s.execute(select(Media)).scalars():
            sig = json.loads(unseal(instance.private_keys().private_key, m.signals))
            assert m.sha256_key == envelope.keyed_name(instance.pepper, bytes.fromhex(sig["sha256"]))
        assert s.execute(select(Match)).scalars().all()
        assert s.get(CrawlJob, job).status == "done"
    _check_blobs(instance)
    if database_url.startswith("sqlite"):
        # no plaintext hash at rest: not one media SHA-256 appears in the database files
        raw = b"".join(p.read_bytes() for p in instance.settings.instance.glob("kesu.db*"))
        for sha in hashes.values():
            assert sha.encode() not in raw and sha.upper().encode() not in raw

    # the minors page's manifest is signed metadata (URLs, hashes), and nothing else
    files = _decrypt(instance, index)
    assert set(files) == {"manifest.json", "manifest.sig"}
    assert json.loads(files["manifest.json"])["metadata_only"] is True

    # the gallery export verifies, and its WACZ validates
    data = export_capture(instance, gallery.id)
    path = instance.settings.instance / "gallery.zip"
    path.write_bytes(data)
    rep_ok = ev.verify(path, instance.private_keys().verify_key)
    assert rep_ok["ok"], rep_ok["problems"]
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))
    assert manifest["operator"] == "test" and manifest["capture"]["server_ip"] == "127.0.0.1"
    wacz = instance.settings.instance / "gallery.wacz"
    wacz.write_bytes(zipfile.ZipFile(io.BytesIO(data)).read("capture.wacz"))
    assert ev.validate_wacz(wacz)[0]

    # idempotent: running the finished job again, or resuming it, writes nothing new
    counts = _counts(instance)
    crawl(instance, job, matcher=matcher)
    with instance.session() as s:
        s.get(CrawlJob, job).status = "running"
    again = crawl(instance, job, matcher=matcher)
    assert again["skipped"] == 4 and again["captured"] == 0
    assert _counts(instance) == counts
    _check_blobs(instance)


def _decrypt(inst, capture):
    key = unseal(inst.private_keys().private_key, capture.data_key)
    return {n: inst.blobs.get(key, i["blob"]) for n, i in capture.evidence["artifacts"].items()}


def _counts(inst):
    with inst.session() as s:
        return (len(s.execute(select(Capture)).all()), len(s.execute(select(Media)).all()),
                len(s.execute(select(Match)).all()), len(_blob_files(inst)))


KILLER = r"""
import json, os, signal, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests"), os.path.join(sys.argv[1], "tests", "workers", "capture")]
from store.config import load
from store.instance import Instance
from store.blobs import BlobStore
from workers.capture.crawl import crawl
from test_crawl import SETTINGS, ShaMatcher
inst = Instance(load(sys.argv[2], database_url=sys.argv[3], **SETTINGS))
inst.unlock("test passphrase")
table = json.loads(sys.argv[5])
kill_at = int(sys.argv[6])
store = type(inst.blobs)                          # files, or the database's blobs table
real_put, calls = store.put, [0]
def put(self, key, data, **kw):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)       # the worker dies in the middle of a page's blobs
    return real_put(self, key, data, **kw)
store.put = put
crawl(inst, int(sys.argv[4]), matcher=ShaMatcher({k: int(v) for k, v in table.items()}))
"""


def test_killed_job_retried_leaves_no_duplicates(instance, site, database_url):
    base, hashes = site
    adult, minor = _cases(instance)
    table = {hashes["img/a.png"]: adult, hashes["img/index.png"]: minor}
    # first the index page (a minors match: 2 blobs, manifest and signature) in a job of its own
    crawl(instance, create_job(instance, f"{base}/index.html", depth=0), matcher=ShaMatcher(table))
    job = create_job(instance, f"{base}/gallery.html", depth=0, requested_by="test")
    # gallery: 7 blobs (WACZ, screenshot, MHTML, HTML, matched image, manifest, signature); killed at the third
    proc = subprocess.run([sys.executable, "-c", KILLER, str(ROOT), str(instance.settings.instance), database_url,
                           str(job), json.dumps(table), "3"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, proc.stderr[-2000:]
    with instance.session() as s:
        rows = s.execute(select(Capture).where(Capture.job_id == job)).scalars().all()
        if instance.settings.blobs_in_database:     # one transaction: nothing of the page was written
            assert rows == []
        else:
            assert [c.status for c in rows] == ["pending"]
            assert len(rows[0].evidence["pending"]) == 7
        assert s.get(CrawlJob, job).status == "running"
    # index's, and (files only) two of gallery's
    assert len(_blob_files(instance)) == 2 + (0 if instance.settings.blobs_in_database else 2)

    stats = crawl(instance, job, matcher=ShaMatcher(table))
    assert stats["pages"] == 1 and stats["captured"] == 1
    with instance.session() as s:
        urls = [c.url for c in s.execute(select(Capture)).scalars()]
        assert sorted(urls) == [f"{base}/gallery.html", f"{base}/index.html"]
        assert len(s.execute(select(Match)).all()) == 2
    _check_blobs(instance)
    assert len(_blob_files(instance)) == 2 + 7
    rep = report(instance, job)
    assert [m["url"] for m in rep["matches"]] == [f"{base}/img/a.png"] and len(rep["pages"]) == 1


def test_kesu_crawl_wait_prints_the_report(tmp_path, site):
    """End to end, nothing stood in for: a victim's sealed submission (signals of one image),
    then `kesu crawl URL --depth 0 --wait` with no worker running: it takes the submission in,
    refreshes the matcher, crawls in its own process, and prints the §6.1 JSON on stdout."""
    from pipeline import submit
    base, hashes = site
    database_url = f"sqlite:///{tmp_path / 'cli' / 'kesu.db'}"
    inst = Instance(load(tmp_path / "cli", database_url=database_url, **SETTINGS))
    inst.init(PASSPHRASE)
    with urllib.request.urlopen(f"{base}/img/index.png") as resp:
        case_id = submit(inst, resp.read())[2]           # waits for take-in: `kesu crawl --wait` does it
    env = dict(os.environ, KESU_INSTANCE=str(tmp_path / "cli"), KESU_DATABASE_URL=database_url,
               KESU_KEY_PASSPHRASE=PASSPHRASE, KESU_CRAWL_ALLOW_PRIVATE="1", KESU_CRAWL_DELAY="0",
               KESU_REDIS_URL="redis://127.0.0.1:1/0")
    proc = subprocess.run([sys.executable, "-m", "cli", "crawl", f"{base}/index.html", "--depth", "0",
                           "--wait"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no crawl worker" in proc.stderr
    out = json.loads(proc.stdout)                # stdout holds the JSON object and nothing else
    (page,) = out["pages"]
    assert {k: page[k] for k in ("url", "final_url", "status", "error")} == {
        "url": f"{base}/index.html", "final_url": f"{base}/index.html", "status": "ok", "error": None}
    assert [(m["url"], m["sha256"], m["mime"]) for m in page["media"]] == [
        (f"{base}/img/index.png", hashes["img/index.png"], "image/png")]
    assert page["media"][0]["bytes"] > 100
    got = {(m["case"], m["page"], m["url"], m["sha256"], m["kind"], m["distance"]) for m in out["matches"]}
    assert {k for *_, k, _ in got} >= {"sha256", "md5", "pdq"}
    assert len(got) == len(out["matches"])       # each (case, media, kind) once
    for m in out["matches"]:
        assert (m["case"], m["page"], m["url"], m["sha256"], m["distance"]) == (
            str(case_id), f"{base}/index.html", f"{base}/img/index.png", hashes["img/index.png"], 0)
        assert 0 < m["confidence"] <= 1
    # the matched page has its full evidence, and the export verifies
    with inst.session() as s:
        capture = s.execute(select(Capture)).scalars().one()
        assert {"capture.wacz", "screenshot.png", "manifest.json", "manifest.sig"} <= set(capture.evidence["artifacts"])
    export = tmp_path / "export.zip"
    ok = subprocess.run([sys.executable, "-m", "cli", "evidence", "capture", str(capture.id), "--out",
                         str(export)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    check = subprocess.run([sys.executable, "-m", "cli", "evidence", "verify", str(export)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "(this instance)" in check.stdout, check.stdout + check.stderr


def test_kesu_crawl_hands_the_job_to_a_running_worker(tmp_path, site):
    """With a `kesu worker` on the crawl queue, `kesu crawl --wait` enqueues and waits for it.
    A private redis-server on a unix socket (as `kesu run` starts), so no other test's flush interferes."""
    base, hashes = site
    sock = Path(tempfile.mkdtemp(prefix="kr-")) / "r.sock"
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis_url = f"unix://{sock}"
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert redis.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    database_url = f"sqlite:///{tmp_path / 'q' / 'kesu.db'}"
    Instance(load(tmp_path / "q", database_url=database_url, **SETTINGS)).init(PASSPHRASE)
    env = dict(os.environ, KESU_INSTANCE=str(tmp_path / "q"), KESU_DATABASE_URL=database_url,
               KESU_KEY_PASSPHRASE=PASSPHRASE, KESU_CRAWL_ALLOW_PRIVATE="1", KESU_CRAWL_DELAY="0",
               KESU_REDIS_URL=redis_url)
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--queues", "crawl"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the crawl worker holds no private key: the matcher (keyed, long-lived) answers for it
    keyed = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--queues", "match"], cwd=ROOT,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from workers.system.queue import workers_listening
        settings = load(tmp_path / "q", redis_url=redis_url)
        deadline = time.monotonic() + 60
        while workers_listening(settings, "crawl") == 0 or workers_listening(settings, "match") == 0:
            assert worker.poll() is None, worker.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.2)
        proc = subprocess.run([sys.executable, "-m", "cli", "crawl", f"{base}/index.html", "--depth",
                               "0", "--wait"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        keyed.terminate()
        keyed.wait(timeout=30)
        redis.terminate()
        redis.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "handed to the running workers" in proc.stderr
    out = json.loads(proc.stdout)
    (page,) = out["pages"]
    assert page["status"] == "ok" and [m["sha256"] for m in page["media"]] == [hashes["img/index.png"]]


class RecordingMatcher:
    """Matches nothing; keeps the signals it was asked about, by SHA-256."""

    def __init__(self):
        self.asked = {}

    def __call__(self, instance, signals):
        self.asked[signals["sha256"]] = {k: signals[k] for k in ("pdq", "vpdq", "faces", "error")}
        return []


def test_a_pool_of_signal_processes_gives_the_worker_own_signals(instance, site, monkeypatch):
    from workers.signals.pool import SignalPool
    base, _ = site
    asked = {}
    pages = []                      # (pool size, media on the page) of every page the crawl hashed
    real_map = SignalPool.map
    monkeypatch.setattr(SignalPool, "map",
                        lambda self, fn, items: pages.append((self.processes, len(items))) or real_map(self, fn, items))
    for processes in (1, 2):
        instance.settings.crawl_signal_processes = processes
        matcher = RecordingMatcher()
        crawl(instance, create_job(instance, f"{base}/gallery.html", depth=0, requested_by="test"), matcher=matcher)
        asked[processes] = matcher.asked
    assert len(asked[2]) >= 5 and any(s["pdq"] for s in asked[2].values())
    assert asked[2] == asked[1]
    assert any(size == 2 and n >= 5 for size, n in pages)     # the second crawl's page went through a pool of 2
