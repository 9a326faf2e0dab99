"""Crawl throughput per worker on the fixture site, against a bare Chromium loading the same pages.

Three ways over the same pages, a few rounds each, one Chromium each:
  bare     plain Selenium `get` (waits for the load event), nothing recorded; again with its
           traffic through the address guard (workers.net.guard), to show what the guard costs
  capture  workers.capture.page.capture: DevTools network capture, bodies, scrolling, settle,
           whole-file fetches, MHTML, stamped full-page screenshot (default limits: the page
           must stay quiet for 1 s, so delayed loads are caught); again with a 0.3 s quiet
           window, to show how much of the time is that deliberate wait
  crawl    workers.capture.crawl.crawl on a fresh instance: capture + signals (PDQ, vPDQ; faces off)
           + sealed Media rows (nothing matches, so no evidence files)
Prints pages per minute and media per second for each, and the ratio capture/bare and
crawl/bare of the time per page (the capture overhead).

    .venv/bin/python bench/bench_crawl.py [--rounds 3]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("SE_OFFLINE", "true")

from sites import build_site, serve_site  # noqa: E402

PAGES = ["index.html", "gallery.html", "video.html", "hls.html", "landing.html", "redirect/1"]
MEDIA_JS = ("return performance.getEntriesByType('resource').filter(e => ['img','video','audio','css','fetch',"
            "'xmlhttprequest','other'].includes(e.initiatorType) && !e.name.endsWith('.css')).length")


def bare(base, rounds, guarded=False):
    """The crawler's Chromium, no capture; `guarded`: its traffic through an address guard (its cost)."""
    from workers.capture.chromium import new_driver
    from workers.net.guard import Guard
    guard = Guard(allow_private=True).start() if guarded else None
    driver = new_driver(1280, 900, guard.chromium_args() if guard else (), sandbox=True)
    driver.kesu_guard = guard
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    times, media = [], 0
    try:
        for _ in range(rounds):
            for page in PAGES:
                t = time.perf_counter()
                driver.get(f"{base}/{page}")
                times.append(time.perf_counter() - t)
                media += driver.execute_script(MEDIA_JS)
    finally:
        driver.quit()
    return times, media


def capture(base, rounds, idle=None):
    from workers.capture import page as cap
    driver = cap.open_browser()
    limits = cap.Limits() if idle is None else cap.Limits(idle_seconds=idle)
    times, media = [], 0
    try:
        for _ in range(rounds):
            for page in PAGES:
                t = time.perf_counter()
                r = cap.capture(f"{base}/{page}", driver=driver, limits=limits, allow_private=True)
                times.append(time.perf_counter() - t)
                assert r.status == "ok", (page, r.status, r.error)
                media += len(r.media)
    finally:
        driver.quit()
    return times, media


def crawl(base, rounds):
    from sqlalchemy import select

    from store.config import load
    from store.instance import Instance
    from store.models import Media
    from workers.capture import page as cap
    from workers.capture.crawl import crawl as run_crawl
    from workers.capture.crawl import create_job
    times, media = [], 0
    with tempfile.TemporaryDirectory(prefix="kesu-bench-") as tmp:
        inst = Instance(load(Path(tmp) / "instance", crawl_allow_private=True, crawl_delay=0, crawl_faces=0))
        inst.init("bench passphrase")
        driver = cap.open_browser()
        try:
            for _ in range(rounds):
                for page in PAGES:
                    job = create_job(inst, f"{base}/{page}", depth=0)
                    t = time.perf_counter()
                    run_crawl(inst, job, driver=driver, matcher=lambda i, s: [])
                    times.append(time.perf_counter() - t)
        finally:
            driver.quit()
        with inst.session() as s:
            media = len(s.execute(select(Media)).all())
    return times, media


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kesu-site-") as folder:
        build_site(Path(folder))
        base, stop = serve_site(Path(folder))
        try:
            bare(base, 1)                               # warm-up (disk caches, the fixture server): not counted
            results = {"bare": bare(base, args.rounds), "bare, through the guard": bare(base, args.rounds, True),
                       "capture": capture(base, args.rounds),
                       "capture, idle 0.3 s": capture(base, args.rounds, idle=0.3),
                       "crawl": crawl(base, args.rounds)}
        finally:
            stop()
    print(f"crawl benchmark: {len(PAGES)} fixture pages x {args.rounds} rounds, one Chromium per way, "
          f"{os.cpu_count()} CPUs")
    base_per_page = sum(results["bare"][0]) / len(results["bare"][0])
    for name, (times, media) in results.items():
        total = sum(times)
        per_page = total / len(times)
        print(f"  {name:20s} {60 / per_page:7.1f} pages/min  {media / total:7.1f} media/s  "
              f"median {statistics.median(times):.2f} s/page  ({media} media)  "
              f"ratio {per_page / base_per_page:.2f}x bare")
    print(f"capture overhead: {sum(results['capture'][0]) / sum(results['bare'][0]):.2f}x the time of a bare "
          f"load; a crawl worker (with signals and writes): {sum(results['crawl'][0]) / sum(results['bare'][0]):.2f}x; "
          f"the address guard alone: {sum(results['bare, through the guard'][0]) / sum(results['bare'][0]):.2f}x")


if __name__ == "__main__":
    main()
