"""Patrol throughput: pages per hour per crawl worker, and the workers 17,000 domains need.

Serves N generated sites (tests/patrol_sites.py: each on its own loopback address, a listing
with pagination, generated images), then, in one process with one Chromium:

  patrol, first run   every page new: each is loaded and captured in full (workers.capture.page:
                      DevTools network capture, scrolling, screenshot, MHTML), its media hashed
                      and matched (the real matcher, one registered case), and written (DESIGN §3)
  patrol, second run  nothing changed: robots.txt remembered, one conditional request per domain
  bare Chromium       the same page URLs loaded by a plain Selenium Chromium (page load event,
                      nothing captured): the baseline, measured in the same run

and prints pages per hour per worker, the ratio patrol / bare Chromium, and the workers needed
for 17,000 domains at the default budgets (store/config.py), with the formula:

  worst case (every page of every domain new each run):
      workers = domains x pages_per_run x runs_per_day / (pages_per_hour x 24)
  incremental (a share `changed` of the domains has something new each run):
      workers = domains x runs_per_day x (changed x pages_per_changed_run x seconds_per_page
                + (1 - changed) x seconds_per_unchanged_run) / 86400

Run:  .venv/bin/python bench/bench_patrol.py [SITES] [CHANGED_SHARE]
"""
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("SE_OFFLINE", "true")

DOMAINS = 17000


def main(n_sites: int = 12, changed: float = 0.1) -> int:
    import patrol_sites
    from conftest import make_instance

    from store.models import Domain, utcnow
    from workers.capture import crawl as cr
    from workers.capture import patrol as P
    from workers.matching import matcher as match

    folder = Path(tempfile.mkdtemp(prefix="kesu-bench-patrol-"))
    # the crawler's production defaults (1 s quiet window, 1 s between pages of a host), faces off
    inst = make_instance(folder, f"sqlite:///{folder / 'kesu.db'}", crawl_faces=0)
    sites = patrol_sites.build(n_sites, uploads=6, seed=50_000)
    match.reset()
    try:
        with inst.session() as s:
            for site in sites:
                s.add(Domain(domain=site.domain, patrol_seeds=[site.base + "/new"]))
        driver = cr.start_browser(inst.settings)
        try:
            t = time.monotonic()
            first = P.patrol(inst, driver=driver)
            first_s = time.monotonic() - t
            t = time.monotonic()
            second = P.patrol(inst, driver=driver, now=utcnow() + timedelta(days=2))
            second_s = time.monotonic() - t
        finally:
            driver.quit()
        pages = sum(r["pages"] for r in first)
        urls = [site.base + "/new" + (f"?page={p}" if p > 1 else "")
                for site in sites for p in range(1, -(-len(site.uploads) // patrol_sites.PER_PAGE) + 1)]
        # the baseline: a plain Chromium loading the same pages (load event), nothing captured
        from workers.capture.chromium import new_driver
        plain = new_driver()                     # the same Chromium and flags, default page load strategy
        try:
            plain.get(urls[0])
            t = time.monotonic()
            for u in urls:
                plain.get(u)                     # waits for the load event (pageLoadStrategy normal)
            bare_s = time.monotonic() - t
        finally:
            plain.quit()
    finally:
        sites.stop()
        shutil.rmtree(folder, ignore_errors=True)

    pph = pages / first_s * 3600
    bare_pph = len(urls) / bare_s * 3600
    sec_per_page = first_s / pages
    unchanged_run = second_s / n_sites
    from store.config import Settings
    defaults = Settings(instance=Path("."))               # the instance defaults (store/config.py)
    d = {name: getattr(defaults, name) for name in ("patrol_pages", "patrol_every_s", "patrol_pages_day")}
    runs_per_day = 86400 / d["patrol_every_s"]
    worst = P.workers_needed(DOMAINS, d["patrol_pages"], runs_per_day, pph)
    changed_pages = pages / n_sites                  # a changed run: the listing pages of one site
    incremental = DOMAINS * runs_per_day * (changed * changed_pages * sec_per_page
                                            + (1 - changed) * unchanged_run) / 86400
    print(f"sites: {n_sites} on loopback, {len(urls)} listing pages, one Chromium, one process")
    print(f"patrol, first run:   {pages} pages in {first_s:.1f} s = {sec_per_page:.3f} s/page "
          f"= {pph:,.0f} pages/hour per crawl worker (bytes {sum(r['bytes'] for r in first):,})")
    print(f"patrol, second run:  {sum(r['pages'] for r in second)} pages, {sum(r['probes'] for r in second)} probes "
          f"in {second_s:.2f} s = {unchanged_run * 1000:.0f} ms per unchanged domain "
          f"(bytes {sum(r['bytes'] for r in second):,})")
    print(f"bare Chromium:       {len(urls)} pages in {bare_s:.1f} s = {bare_pph:,.0f} pages/hour")
    print(f"ratio patrol / bare Chromium (pages per hour): {pph / bare_pph:.2f}")
    print(f"defaults: {d['patrol_pages']} pages per run, every {d['patrol_every_s']} s "
          f"({runs_per_day:g} run/day), {d['patrol_pages_day']} pages/day")
    print(f"workers for {DOMAINS:,} domains, worst case (every page new every run):")
    print(f"  {DOMAINS} x {d['patrol_pages']} x {runs_per_day:g} / ({pph:,.0f} x 24) = {worst:.1f}")
    print(f"workers for {DOMAINS:,} domains, incremental ({changed:.0%} of domains with something new per run, "
          f"{changed_pages:.1f} pages each):")
    print(f"  {DOMAINS} x {runs_per_day:g} x ({changed} x {changed_pages:.1f} x {sec_per_page:.3f} + "
          f"{1 - changed:.2f} x {unchanged_run:.3f}) / 86400 = {incremental:.2f}")
    print("note: loopback sites answer at once; real sites add network time per page (the per-page limits "
          "and patrol_seconds bound it), so real throughput is lower and the worker count higher.")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(sys.argv[1]) if i == 0 else float(sys.argv[2]) for i in range(len(sys.argv) - 1))))
