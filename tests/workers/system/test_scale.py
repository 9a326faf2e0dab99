"""Scale-out as an administrator runs it: PostgreSQL, real forking `kesu worker`s, one Redis.

Nothing is mocked: the workers are the real command, RQ forks a work horse per job, the pages
come from a loopback server, and Chromium renders them.
"""
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TEST_PASSPHRASE, make_instance
from sites import serve_site

ROOT = Path(__file__).resolve().parents[3]
IMAGES_PER_PAGE = 7          # more inserts of one statement than psycopg's prepare threshold (5)
CRAWL = dict(crawl_delay=0, crawl_page_seconds=20, crawl_idle_seconds=0.3,
             crawl_faces=False)

needs_postgres = pytest.mark.skipif(not os.environ.get("KESU_TEST_POSTGRES_URL"),
                                    reason="KESU_TEST_POSTGRES_URL is not set")


def _png(seed: int) -> bytes:
    from PIL import Image
    img = Image.new("RGB", (64, 48), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    for x in range(0, 64, 8):
        for y in range(0, 48, 8):
            if (x // 8 + y // 8 + seed) % 3 == 0:
                img.paste((255 - x * 3, y * 4, (seed * 7) % 256), (x, y, x + 8, y + 8))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def build_pages(folder: Path, pages: int) -> list[str]:
    """`pages` small pages, each with IMAGES_PER_PAGE images of its own; returns their paths."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for p in range(pages):
        imgs = []
        for i in range(IMAGES_PER_PAGE):
            name = f"img/p{p}-{i}.png"
            (folder / name).write_bytes(_png(p * 100 + i))
            imgs.append(f'<img src="{name}" alt="">')
        (folder / f"page{p}.html").write_text(f"<!doctype html><html><body><h1>page {p}</h1>{''.join(imgs)}"
                                              "</body></html>", "utf-8")
        names.append(f"page{p}.html")
    return names


@pytest.fixture
def pg_url():
    from conftest import _fresh_postgres
    from sqlalchemy import create_engine, text

    from store import db
    base = os.environ["KESU_TEST_POSTGRES_URL"]
    url, schema = _fresh_postgres(base)
    yield url
    for key in [k for k in db._engines if schema in k]:
        db._engines.pop(key).dispose()
    eng = create_engine(base)
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    eng.dispose()


def worker_env(folder: Path, database_url: str, redis_url: str, **extra) -> dict:
    env = {**os.environ, "KESU_INSTANCE": str(folder), "KESU_DATABASE_URL": database_url,
           "KESU_REDIS_URL": redis_url, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE, "KESU_KEY_KDF": "interactive",
           "PYTHONPATH": str(ROOT)}
    env.update({f"KESU_{k.upper()}": str(v) for k, v in {**CRAWL, "crawl_allow_private": True}.items()})
    env.update({k: str(v) for k, v in extra.items()})
    return env


@needs_postgres
@pytest.mark.browser
def test_forking_worker_runs_every_crawl_on_postgres(tmp_path, pg_url, redis_url):
    """Three crawls through one forking `kesu worker`: each work horse opens its own connections
    (before the fix, the second job failed with "prepared statement _pg3_0 already exists")."""
    from sqlalchemy import func, select

    from store.models import Capture, CrawlJob, Media
    from workers import jobs
    from workers.capture.crawl import create_job
    site = tmp_path / "site"
    pages = build_pages(site, 3)
    base, stop = serve_site(site)
    inst = make_instance(tmp_path / "a", pg_url, redis_url=redis_url, **CRAWL)
    keyed = _start_matcher(tmp_path / "a", inst, redis_url)    # crawl workers hold no key: it matches for them
    try:
        ids = [create_job(inst, f"{base}/{p}", depth=0) for p in pages]
        for job_id in ids:
            assert jobs.enqueue(inst.settings, "crawl", job_id)
        worker = subprocess.run([sys.executable, "-m", "cli", "worker", "--queues", "crawl", "--burst"],
                                cwd=ROOT, env=worker_env(tmp_path / "a", pg_url, redis_url),
                                capture_output=True, text=True, timeout=240)
        assert worker.returncode == 0, worker.stderr[-3000:]
    finally:
        _reap(keyed)
        stop()
    assert "already exists" not in worker.stderr, worker.stderr[-3000:]
    with inst.session() as s:
        assert s.execute(select(CrawlJob.status, CrawlJob.error).order_by(CrawlJob.id)).all() == \
            [("done", None)] * 3
        assert s.execute(select(func.count()).select_from(Capture)).scalar() == 3
        assert s.execute(select(func.count()).select_from(Media)).scalar() == 3 * IMAGES_PER_PAGE


def _start_matcher(folder, inst, redis_url) -> subprocess.Popen:
    """A keyed `kesu worker --queues match`, registered before it is returned."""
    from workers.system.queue import workers_listening
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--queues", "match"], cwd=ROOT,
                            env=worker_env(folder, inst.settings.database_url, redis_url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not workers_listening(inst.settings, "match"):
        assert proc.poll() is None and time.monotonic() < deadline, "the matcher did not start"
        time.sleep(0.2)
    return proc


def _kesu_worker(folder, database_url, redis_url, queues="crawl"):
    return subprocess.run([sys.executable, "-m", "cli", "worker", "--queues", queues, "--burst"], cwd=ROOT,
                          env=worker_env(folder, database_url, redis_url), capture_output=True, text=True, timeout=120)


def test_a_worker_on_an_empty_or_mismatched_folder_refuses_to_start(tmp_path, database_url, redis_url):
    """A second machine that joins the database must be given the first one's secrets (and, to
    open cases, its key store): kesu names what is missing instead of making new ones."""
    import shutil
    first = make_instance(tmp_path / "a", database_url, redis_url=redis_url)
    pepper = first.pepper

    empty = _kesu_worker(tmp_path / "b", database_url, redis_url)
    assert empty.returncode != 0
    assert str(tmp_path / "b" / "secrets" / "pepper") in empty.stderr and "is missing" in empty.stderr
    assert not (tmp_path / "b" / "secrets" / "pepper").exists()          # nothing made silently

    other = tmp_path / "c"
    shutil.copytree(tmp_path / "a" / "secrets", other / "secrets")
    (other / "secrets" / "pepper").write_bytes(os.urandom(32))           # someone's own pepper
    mismatched = _kesu_worker(other, database_url, redis_url)
    assert mismatched.returncode != 0
    assert "secrets/pepper is not the one this database was made with" in mismatched.stderr

    joined = tmp_path / "d"                                              # secrets copied, no key store
    shutil.copytree(tmp_path / "a" / "secrets", joined / "secrets")
    crawler = _kesu_worker(joined, database_url, redis_url, "crawl")
    assert crawler.returncode == 0, crawler.stderr[-2000:]             # crawl workers need no key store
    opener = _kesu_worker(joined, database_url, redis_url, "default")
    assert opener.returncode != 0 and "keystore.id is missing" in opener.stderr
    with_store = subprocess.run([sys.executable, "-m", "cli", "worker", "--queues", "default", "--burst"], cwd=ROOT,
                                env=worker_env(joined, database_url, redis_url,
                                               KESU_KEYSTORE=str(tmp_path / "a" / "keystore")),
                                capture_output=True, text=True, timeout=120)
    assert with_store.returncode == 0, with_store.stderr[-2000:]       # the shared key store: accepted
    assert first.pepper == pepper


# --- two machines, one database, faults on the way ------------------------------------------------

def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port: int, folder: Path) -> subprocess.Popen:
    import redis
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    conn = redis.Redis(port=port)
    assert _until(lambda: _pings(conn), 20), "redis-server did not start"
    return proc


def _pings(conn) -> bool:
    try:
        return conn.ping()
    except Exception:
        return False


def _reap(proc) -> None:
    """Stop a worker the test started: SIGTERM (RQ's warm shutdown lets a busy job finish),
    then SIGKILL if it is still busy after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def _until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _marked(marker: str) -> list[int]:
    """Processes alive with `marker` in their environment (ours and everything they started)."""
    out = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes() and not Path(env.parent, "stat").read_text().split(") ")[1].startswith("Z"):
                out.append(int(env.parent.name))
        except (OSError, IndexError):
            continue
    return out


@needs_postgres
@pytest.mark.browser
def test_two_machines_survive_a_killed_worker_and_a_redis_restart(tmp_path, pg_url):
    """Ten crawls handed to crawl workers on two "machines" (two instance folders, one PostgreSQL,
    one Redis, blobs in the database, the key store shared); one worker is killed in the middle of
    a job and Redis restarts mid-run. Afterwards every crawl is done exactly once, every
    submission is taken in, no row is stuck, no browser is left, and the intake answered throughout."""
    import json
    import shutil
    import signal
    import threading
    import urllib.request
    import uuid

    import redis
    from rq import Worker
    from sqlalchemy import func, select

    from crypto.sealing import b64, seal, unb64
    from store.models import Capture, Case, CrawlJob, JobRun, Media, Submission
    from workers import jobs
    from workers.capture.crawl import create_job

    port = _free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis_proc = _start_redis(port, tmp_path)
    site = tmp_path / "site"
    pages = build_pages(site, 10)
    base, stop_site = serve_site(site)
    a = make_instance(tmp_path / "a", pg_url, redis_url=redis_url, **CRAWL)
    assert a.settings.blobs_in_database
    shutil.copytree(tmp_path / "a" / "secrets", tmp_path / "b" / "secrets")     # machine B: the secrets only
    marker = f"kesu-scale-{uuid.uuid4().hex}"
    intake_port = _free_port()
    common = dict(KESU_TEST_MARK=marker, KESU_JOB_LEASE_SECONDS=4, KESU_INTAKE_PORT=intake_port)
    env_a = worker_env(tmp_path / "a", pg_url, redis_url, **common)
    env_b = worker_env(tmp_path / "b", pg_url, redis_url, **common)
    procs: dict[str, subprocess.Popen] = {}

    def start(name, args, env):
        procs[name] = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "ab"),
                                       start_new_session=True)

    answers, during_outage = [], []
    stop_posting = threading.Event()

    key_id, public = a.public_key()
    payload = {"version": 1, "category": "deepfake", "language": "en", "known_urls": [], "contact": None,
               "consent": {"takedown": True, "hotline": False, "share_hashes": True, "at": "2026-12-07"},
               "signals": [{"type": "sha256", "hash": "ab" * 32, "item": "p1"}],
               "items": [{"item": "p1", "kind": "photo", "label": ""}]}

    def post_case():
        body = json.dumps({"key_id": key_id, "sealed": b64(seal(unb64(public), json.dumps(payload).encode()))})
        req = urllib.request.Request(f"http://127.0.0.1:{intake_port}/api/v1/cases", data=body.encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                answers.append(r.status)
        except urllib.error.HTTPError as e:
            answers.append(e.code)
        except OSError as e:
            answers.append(repr(e))
        return answers[-1]

    def post_cases():
        while not stop_posting.is_set():
            post_case()
            stop_posting.wait(2.5)

    poster = threading.Thread(target=post_cases, daemon=True)
    try:
        start("intake", ["serve", "intake"], env_a)
        start("scheduler", ["scheduler"], env_a)
        start("opener", ["worker", "--queues", "default,match"], env_a)
        start("crawler-a", ["worker", "--queues", "crawl"], env_a)
        start("crawler-b", ["worker", "--queues", "crawl"], env_b)
        conn = redis.Redis.from_url(redis_url)
        assert _until(lambda: len(Worker.all(connection=conn)) == 3, 60), "workers did not register"
        assert _until(lambda: _pings_http(f"http://127.0.0.1:{intake_port}/api/v1/key"), 60)
        poster.start()
        ids = [create_job(a, f"{base}/{p}", depth=0) for p in pages]
        for job_id in ids:
            assert jobs.enqueue(a.settings, "crawl", job_id)

        # machine B dies in the middle of a crawl (the worker, its work horse and its browser)
        def b_holds_a_crawl():        # B's work horse has claimed the run it was woken for
            current = {w.get_current_job_id() for w in Worker.all(connection=conn) if w.pid == procs["crawler-b"].pid}
            with a.session() as s:
                return bool(current - {None}) and s.execute(select(JobRun.id).where(
                    JobRun.state == "running", JobRun.wake_id.in_(current - {None}))).first() is not None
        assert _until(b_holds_a_crawl, 60), "machine B never took a crawl"
        for pid in _tree(procs["crawler-b"].pid):      # RQ's work horse has a session of its own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        procs["crawler-b"].wait(10)
        start("crawler-b", ["worker", "--queues", "crawl"], env_b)          # the machine comes back

        # Redis restarts (no persistence: every queued wake-up is lost)
        redis_proc.kill()
        redis_proc.wait(10)
        during_outage.append(post_case())       # a victim registers while the queue is down
        time.sleep(3)                   # the outage itself (the fault injected), not a wait for a condition
        redis_proc = _start_redis(port, tmp_path)

        def settled():
            with a.session() as s:
                crawls = s.execute(select(CrawlJob.status)).scalars().all()
                waiting = s.execute(select(func.count()).select_from(Submission)).scalar()
                moving = s.execute(select(func.count()).select_from(JobRun)
                                   .where(JobRun.state.in_(("queued", "running")))).scalar()
            return crawls.count("done") == len(ids) and not waiting and not moving
        assert _until(settled, 150), _logs(tmp_path)
        stop_posting.set()
        poster.join(15)
        assert _until(settled, 60), _logs(tmp_path)       # the last submissions too
    finally:
        stop_posting.set()
        for name in ("crawler-a", "crawler-b", "opener", "scheduler", "intake"):
            if name in procs and procs[name].poll() is None:
                procs[name].terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        redis_proc.kill()
        stop_site()
    assert _until(lambda: not _marked(marker), 20), f"left running: {_marked(marker)}"   # no browser left

    assert answers and all(x == 201 for x in answers), answers
    assert during_outage and all(x == 201 for x in during_outage)
    with a.session() as s:
        assert s.execute(select(func.count()).select_from(Case)).scalar() == len(answers)
        per_job = dict(s.execute(select(Capture.job_id, func.count()).group_by(Capture.job_id)).all())
        assert per_job == {job_id: 1 for job_id in ids}                          # one capture per page
        assert s.execute(select(func.count()).select_from(Media)).scalar() == len(ids) * IMAGES_PER_PAGE
        runs = s.execute(select(JobRun.name, JobRun.state, JobRun.attempts)).all()
        assert {state for _, state, _ in runs} == {"done"}
        assert sum(1 for name, _, _ in runs if name == "take_in") == len(answers)
        assert any(name == "crawl" and attempts > 1 for name, _, attempts in runs)  # B's crawl was taken up again


def _tree(root: int) -> list[int]:
    """`root` and every process below it (the way a machine's crash takes them all)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(p for p, pp in parents.items() if pp == pid)
    return out


def _pings_http(url) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(folder.glob("*.log")))


def test_crawl_workers_ask_the_one_matcher_and_a_withdrawal_reaches_it(tmp_path, redis_url):
    """With a `kesu worker --queues match` running, the crawl hook asks it over the queue (signals
    sealed in the question, never plaintext in Redis) and builds no index of its own; a case
    withdrawn elsewhere stops matching in the matcher within seconds, not at its 30 s refresh."""
    import json

    import redis
    from conftest import redis_dump

    from crypto.sealing import seal, unb64
    from store import cases
    from workers.capture.crawl import match_media
    from workers.cases import takein
    from workers.matching import matcher
    from workers.system.queue import workers_listening
    inst = make_instance(tmp_path / "a", f"sqlite:///{tmp_path / 'kesu.db'}", redis_url=redis_url)
    secret_hash = "9c" * 32
    payload = {"version": 1, "category": "deepfake", "language": "en", "known_urls": [], "contact": None,
               "consent": {"takedown": True, "hotline": False, "share_hashes": True, "at": "2026-12-07"},
               "signals": [{"type": "sha256", "hash": secret_hash, "item": "p1"}],
               "items": [{"item": "p1", "kind": "photo", "label": ""}]}
    key_id, public = inst.public_key()
    _n, _p, case_id, sid = cases.create_case(inst, key_id, seal(unb64(public), json.dumps(payload).encode()))
    assert takein.take_in_submission(inst, sid)["status"] == "taken_in"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--queues", "match"], cwd=ROOT,
                            env=worker_env(tmp_path / "a", inst.settings.database_url, redis_url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not workers_listening(inst.settings, "match"):
            assert proc.poll() is None and time.monotonic() < deadline, "the matcher did not start"
            time.sleep(0.2)
        matcher.reset()
        signals = {"sha256": secret_hash, "md5": "0" * 32, "pdq": [], "vpdq": [], "faces": [], "url": "http://x/a.png"}
        found = match_media(inst, signals)
        assert [(c["case"], c["kind"]) for c in found] == [(case_id, "sha256")]
        assert not matcher.loaded()                              # the asking process built no index
        assert secret_hash.encode() not in redis_dump(redis.Redis.from_url(redis_url))
        cases.withdraw(inst, case_id)                            # withdrawn here, not in the matcher
        t = time.monotonic()
        while match_media(inst, signals):
            assert time.monotonic() - t < 10, "the matcher kept a withdrawn case"
            time.sleep(0.2)
    finally:
        _reap(proc)


@pytest.mark.browser
def test_a_crawl_worker_holds_no_private_key_yet_writes_signed_evidence(tmp_path, redis_url):
    """The crawl worker runs without the key passphrase at all: it asks the matcher for matches
    and the keyed worker for the manifest's signature, and the evidence verifies."""
    import hashlib
    import json

    from sqlalchemy import select

    from crypto.sealing import seal, unb64
    from crypto.signing import verify
    from store import cases
    from store.models import Capture, Match
    from workers import jobs
    from workers.capture import evidence as ev
    from workers.capture.crawl import capture_artifacts, create_job
    from workers.cases import takein
    from workers.system.queue import workers_listening
    site = tmp_path / "site"
    pages = build_pages(site, 1)
    target = hashlib.sha256((site / "img" / "p0-3.png").read_bytes()).hexdigest()
    base, stop = serve_site(site)
    inst = make_instance(tmp_path / "a", f"sqlite:///{tmp_path / 'kesu.db'}", redis_url=redis_url, **CRAWL)
    payload = {"version": 1, "category": "deepfake", "language": "en", "known_urls": [], "contact": None,
               "consent": {"takedown": True, "hotline": False, "share_hashes": True, "at": "2026-12-07"},
               "signals": [{"type": "sha256", "hash": target, "item": "p1"}],
               "items": [{"item": "p1", "kind": "photo", "label": ""}]}
    key_id, public = inst.public_key()
    _n, _p, case_id, sid = cases.create_case(inst, key_id, seal(unb64(public), json.dumps(payload).encode()))
    assert takein.take_in_submission(inst, sid)["status"] == "taken_in"
    env = worker_env(tmp_path / "a", inst.settings.database_url, redis_url)
    matcher_proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--queues", "match"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not workers_listening(inst.settings, "match"):
            assert matcher_proc.poll() is None and time.monotonic() < deadline, "the matcher did not start"
            time.sleep(0.2)
        job_id = create_job(inst, f"{base}/{pages[0]}", depth=0)
        assert jobs.enqueue(inst.settings, "crawl", job_id)
        no_key = {k: v for k, v in env.items() if k != "KESU_KEY_PASSPHRASE"}
        crawler = subprocess.run([sys.executable, "-m", "cli", "worker", "--queues", "crawl", "--burst"], cwd=ROOT,
                                 env=no_key, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
        assert crawler.returncode == 0, crawler.stderr[-3000:]
        assert "the org key stays locked here" in crawler.stderr
    finally:
        _reap(matcher_proc)
        stop()
    with inst.session() as s:
        capture = s.execute(select(Capture)).scalars().one()
        assert [m.case_id for m in s.execute(select(Match)).scalars()] == [case_id]
    files = capture_artifacts(inst, capture.id)
    signature = json.loads(files[ev.SIGNATURE])
    assert unb64(signature["verify_key"]) == inst.private_keys().verify_key
    verify(inst.private_keys().verify_key, json.loads(files[ev.MANIFEST]), signature["signature"])
