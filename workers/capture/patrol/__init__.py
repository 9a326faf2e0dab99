"""Patrol: visit every domain of the domain database again and again, cheaply, fairly.

Staff cannot read 17,000 sites and a victim must never search for her own images, so the
patrol does it: each domain has seed URLs (front page, newest uploads, listings), a frequency
and budgets (pages and bytes per run, pages per 24 hours), all NULL-able on the Domain row
(NULL: the instance default below) and importable with the domain CSV (`clean_patrol`).

One run of one domain (`patrol_site`, in run.py):

1. robots.txt is fetched (at most once per `patrol_robots_ttl`) and its rules recorded on the
   domain; `patrol_robots` = `record` (default) notes the pages it disallows and visits them
   anyway, `obey` skips them (counted as blocked). kesu is not an indexer: it fetches what any
   visitor's browser would, at a polite rate, publishes nothing, and keeps only what DESIGN §3
   allows; an organisation that prefers to obey sets `obey`.
2. Each seed, then each listing's "next" page (rel=next, or the domain's selector), is first
   asked for cheaply when the patrol has seen it before: a conditional GET with its ETag /
   Last-Modified (304: unchanged), or, without validators, a GET whose content hash (the
   page's links and media URLs, so timestamps and tokens don't count) is compared. Only a
   changed page is loaded in Chromium (workers.capture.page), and a listing's next page and its
   detail pages (links wrapping a thumbnail, at most `patrol_detail_pages` per listing page) are
   only followed when the listing changed, so the cost of a run follows what is new.
3. Media URLs this domain's patrols have already fetched are blocked in the browser
   (`Network.setBlockedURLs`): their signals are stored already, and a later case is matched
   against them without fetching them again (workers.matching.matcher.retro_match).
4. Age gates and cookie walls: the domain's selector is clicked, or, without one, a common
   gate (a button that says 18+/enter/agree/はい inside an element named age/gate/verify/
   consent/cookie); the domain's cookie(s) are set in the browser before the first page.
   The probe of step 2 sends the browser's cookies for the page, so a passed gate stays passed.
5. Everything captured goes through the crawler's writer (workers.capture.crawl): signals, the
   matcher hook, Match rows for the review queue, full evidence only for what matched.

A run stops at its budgets: pages, bytes, and `patrol_seconds` of wall time (a site that
hangs costs its own budget, never the others'). Each run is a PatrolRun row (pages,
probes, bytes, media, matches, errors, blocked, what stopped it) and a CrawlJob whose
captures `workers.capture.crawl.report` can print.

Scheduling (`due`, `fill`): each domain is due at `last_patrol_at + every / weight`, where the
weight grows with the matches found on the domain before and the URLs victims and staff
reported there (takedowns, and the known URLs of cases, read in memory only). `fill` (a
scheduled job) puts the due domains on the crawl queue in that order, never more than
`patrol_queue_depth` at once, and leases each domain while its run is queued or running,
so a host is never patrolled by two workers at once. Schedules are the Domain columns.

Modules, one concept each: config (settings and their cleaning), probe (robots.txt and cheap
conditional GETs), browser (what is done in the page), run (one run, with a browser of its
own that it closes), schedule (who is due, the queue), overview (the patrol page). The
crawler is used through its public functions only (workers.capture.crawl).
"""
from workers.capture.patrol.config import CSV_ALIASES, PATROL_FIELDS, clean_patrol, setting, site_config
from workers.capture.patrol.overview import overview, workers_needed
from workers.capture.patrol.probe import content_hash, fetch, parser_disallows_all, url_key
from workers.capture.patrol.run import patrol, patrol_site, run_job
from workers.capture.patrol.schedule import due, fill, fill_job, interval, queue_depth, weights

__all__ = ["CSV_ALIASES", "PATROL_FIELDS", "clean_patrol", "content_hash", "due", "fetch", "fill", "fill_job",
           "interval", "overview", "parser_disallows_all", "patrol", "patrol_site", "queue_depth", "run_job",
           "setting", "site_config", "url_key", "weights", "workers_needed"]
