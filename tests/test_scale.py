"""Scale-out as an administrator runs it: PostgreSQL, real forking `kesu worker`s, one Redis.

Nothing is mocked: the workers are the real command, RQ forks a work horse per job, the pages
come from a loopback server, and Chromium renders them.
"""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_PASSPHRASE, make_instance
from sites import serve_site

ROOT = Path(__file__).resolve().parents[1]
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
    try:
        ids = [create_job(inst, f"{base}/{p}", depth=0) for p in pages]
        for job_id in ids:
            assert jobs.enqueue(inst.settings, "crawl", job_id)
        worker = subprocess.run([sys.executable, "-m", "cli", "worker", "--queues", "crawl", "--burst"],
                                cwd=ROOT, env=worker_env(tmp_path / "a", pg_url, redis_url),
                                capture_output=True, text=True, timeout=240)
        assert worker.returncode == 0, worker.stderr[-3000:]
    finally:
        stop()
    assert "already exists" not in worker.stderr, worker.stderr[-3000:]
    with inst.session() as s:
        assert s.execute(select(CrawlJob.status, CrawlJob.error).order_by(CrawlJob.id)).all() == \
            [("done", None)] * 3
        assert s.execute(select(func.count()).select_from(Capture)).scalar() == 3
        assert s.execute(select(func.count()).select_from(Media)).scalar() == 3 * IMAGES_PER_PAGE
