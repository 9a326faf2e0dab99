"""Scale-out: crawl throughput with one and with two forking `kesu worker --queues crawl`, and the
matcher's answer time per crawled image.

The same set-up as tests/workers/system/test_scale.py: one database (PostgreSQL when KESU_TEST_POSTGRES_URL is
set, else SQLite), a redis-server of its own, small loopback pages (7 images each, depth 0),
every crawl handed through the job registry (a JobRun row, then the wake-up). Round 1 runs one
crawl worker, round 2 two (the second with an instance folder of its own holding only the
secrets, as a second machine would). Prints pages per minute for each and the ratio two/one.

A keyed `kesu worker --queues match` runs throughout: the crawl workers hold no private key and
ask it for matches and signatures, as in production.

The matcher's own work: an index of N synthetic cases (PDQ, MD5, SHA-256 signals), asked about the
signals of every crawled image, as the long-lived matcher answers a crawl worker; prints the
median and 95th percentile time per image (its baseline: the same index with one case).

    .venv/bin/python bench/bench_scale.py [--pages 12] [--cases 500]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("SE_OFFLINE", "true")

from conftest import _fresh_postgres, make_instance  # noqa: E402
from sites import serve_site  # noqa: E402
from test_scale import CRAWL, _start_matcher, build_pages, worker_env  # noqa: E402


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def crawl_round(inst, base, pages, folders, redis_url) -> float:
    """Seconds for `len(folders)` crawl workers to finish one crawl per page."""
    import redis
    from rq import Worker
    from sqlalchemy import func, select

    from store.models import CrawlJob
    from workers import jobs
    from workers.capture.crawl import create_job
    conn = redis.Redis.from_url(redis_url)
    procs = [subprocess.Popen([sys.executable, "-m", "cli", "worker", "--queues", "crawl"], cwd=ROOT,
                              env=worker_env(folder, inst.settings.database_url, redis_url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for folder in folders]
    try:
        assert _wait(lambda: len(Worker.all(connection=conn)) == len(folders), 60), "workers did not start"
        ids = [create_job(inst, f"{base}/{p}", depth=0) for p in pages]
        started = time.perf_counter()
        for job_id in ids:
            jobs.enqueue(inst.settings, "crawl", job_id)

        def done():
            with inst.session() as s:
                return s.execute(select(func.count()).select_from(CrawlJob).where(
                    CrawlJob.id.in_(ids), CrawlJob.status == "done")).scalar() == len(ids)
        assert _wait(done, 900), "crawls did not finish"
        return time.perf_counter() - started
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)


def matcher_times(inst, site: Path, n_cases: int) -> list[float]:
    """Seconds per crawled image for workers.matching.matcher.match_media with n_cases indexed."""
    import hashlib
    import random

    from workers.capture.crawl import media_signals
    from workers.matching import matcher
    from workers.matching.index import Index
    rng = random.Random(15)
    idx = Index()
    for case in range(1, n_cases + 1):
        idx.add_case(case, [{"type": "pdq", "hash": "%064x" % rng.getrandbits(256), "quality": 90, "item": f"p{i}"}
                            for i in range(5)] +
                     [{"type": "sha256", "hash": "%064x" % rng.getrandbits(256), "item": "p0"},
                      {"type": "md5", "hash": "%032x" % rng.getrandbits(128), "item": "p0"}])
    idx.compact()
    images = sorted(site.glob("img/*.png"))
    signals = []
    for path in images:
        body = path.read_bytes()
        signals.append(media_signals({"body": body, "sha256": hashlib.sha256(body).hexdigest(), "mime": "image/png",
                                      "bytes": len(body), "url": path.name}, faces=False))
    out = []
    for sig in signals:
        t = time.perf_counter()
        matcher.score(inst, idx.query(sig), sig["url"], history={})
        out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=12)
    ap.add_argument("--cases", type=int, default=500)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    pg = os.environ.get("KESU_TEST_POSTGRES_URL")
    database_url, schema = _fresh_postgres(pg) if pg else (f"sqlite:///{tmp / 'kesu.db'}", None)
    port = _free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL,
                                  start_new_session=True)
    pages = build_pages(tmp / "site", args.pages)
    base, stop = serve_site(tmp / "site")
    try:
        inst = make_instance(tmp / "a", database_url, redis_url=redis_url, **CRAWL)
        shutil.copytree(tmp / "a" / "secrets", tmp / "b" / "secrets")
        keyed = _start_matcher(tmp / "a", inst, redis_url)     # crawl workers hold no key: it matches for them
        one = crawl_round(inst, base, pages, [tmp / "a"], redis_url)
        two = crawl_round(inst, base, pages, [tmp / "a", tmp / "b"], redis_url)
        per_min_one, per_min_two = 60 * len(pages) / one, 60 * len(pages) / two
        print(f"database {'PostgreSQL' if pg else 'SQLite'}, {len(pages)} pages of 7 images, depth 0, "
              f"{os.cpu_count()} CPU(s)")
        print(f"one crawl worker   {per_min_one:6.1f} pages/min ({one:.1f} s)")
        print(f"two crawl workers  {per_min_two:6.1f} pages/min ({two:.1f} s)")
        print(f"ratio two/one      {per_min_two / per_min_one:.2f}x")
        base_t = matcher_times(inst, tmp / "site", 1)
        many_t = matcher_times(inst, tmp / "site", args.cases)
        for label, ts in (("1 case", base_t), (f"{args.cases} cases", many_t)):
            q = statistics.quantiles(ts, n=20)
            print(f"matcher answer per image, {label:>10}: median {1000 * statistics.median(ts):.2f} ms, "
                  f"p95 {1000 * q[-1]:.2f} ms ({len(ts)} images)")
        print(f"ratio {args.cases} cases / 1 case (median): "
              f"{statistics.median(many_t) / statistics.median(base_t):.2f}x")
        keyed.terminate()
        keyed.wait(30)
    finally:
        stop()
        redis_proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
        if schema:
            from sqlalchemy import create_engine, text

            from store import db
            for eng in db._engines.values():     # noqa: SLF001 - the bench's own engines
                eng.dispose()
            eng = create_engine(pg)
            with eng.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            eng.dispose()


if __name__ == "__main__":
    main()
