"""`kesu crawl URL [--depth N] [--wait]` (DESIGN.md §6.1).

`kesu crawl` hands the job to the running system when a worker listens on the `crawl`
queue, and otherwise runs it in its own process. Progress and logs go to stderr; with
`--wait`, stdout gets exactly one JSON object (the report of §6.1).
"""
import json
import sys
import time

import click

from cli.common import operator, worker_instance


def _prepare_matching(instance):
    """Before a waited crawl: take in pending intake submissions and refresh the indexes."""
    from workers.cases.takein import take_in_pending
    from workers.matching import matcher as match
    n = take_in_pending(instance)
    if n:
        click.echo(f"took in {n} pending submission(s)", err=True)
    match.refresh(instance)


@click.command("crawl")
@click.argument("url")
@click.option("--depth", default=1, show_default=True, type=click.IntRange(0, 10),
              help="Link depth on the same site (1: the page and the pages it links to).")
@click.option("--wait", is_flag=True, help="Wait for the crawl and its matching; print the result as JSON.")
def crawl_command(url, depth, wait):
    """Capture URL (and its same-site links) as evidence, matching everything it loads."""
    from workers.capture.crawl import crawl, create_job, report
    from workers.system.queue import workers_listening
    instance = worker_instance(unlock=True)
    settings = instance.settings
    if not url.startswith(("http://", "https://")):
        raise click.UsageError("URL must start with http:// or https://")
    if wait:
        _prepare_matching(instance)
    job_id = create_job(instance, url, depth=depth, requested_by=operator())
    bar = click.progressbar(length=max(1, settings.crawl_max_pages), label=f"crawl {job_id}", file=sys.stderr,
                            show_pos=True)
    if workers_listening(settings, "crawl") > 0:
        from workers import jobs
        if not jobs.enqueue(settings, "crawl", job_id, job_id=f"kesu-crawl-{job_id}",
                            job_timeout=settings.crawl_max_seconds + 300):
            raise click.ClickException("the queue is not reachable (is Redis up?)")
        click.echo(f"crawl job {job_id} handed to the running workers", err=True)
        if not wait:
            return
        from store.models import CrawlJob
        shown = 0
        give_up = time.monotonic() + settings.crawl_max_seconds + 900
        with bar:
            while True:
                if time.monotonic() > give_up:
                    raise click.ClickException(f"crawl job {job_id} did not finish in time (is the worker busy?)")
                with instance.session() as s:
                    job = s.get(CrawlJob, job_id)
                    status, stats, error = job.status, dict(job.stats or {}), job.error
                pages = int(stats.get("pages", 0))
                if pages > shown:
                    bar.update(pages - shown)
                    shown = pages
                if status in ("done", "error"):
                    break
                time.sleep(0.5)
        if status == "error":
            click.echo(f"crawl job {job_id} failed: {error}", err=True)
    else:
        click.echo(f"no crawl worker is running: crawling in this process (job {job_id})", err=True)
        state = {"shown": 0}

        def progress(info):
            step = int(info["pages"]) - state["shown"]
            if step > 0:
                bar.update(step)
                state["shown"] += step
            click.echo(f"  {info['url']}", err=True)

        from workers.system import runs
        with bar:       # claimed like a worker's delivery: a sweep elsewhere never runs it twice
            runs.run_claimed(instance, "crawl", job_id, lambda: crawl(instance, job_id, progress=progress))
    if wait:
        click.echo(json.dumps(report(instance, job_id), ensure_ascii=False))
    else:
        click.echo(f"crawl job {job_id} done", err=True)

