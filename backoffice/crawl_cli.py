"""`kesu crawl URL [--depth N] [--wait]` and `kesu evidence verify FILE` (DESIGN.md §6.1).

`kesu crawl` hands the job to the running system when a worker listens on the `crawl`
queue, and otherwise runs it in its own process. Progress and logs go to stderr; with
`--wait`, stdout gets exactly one JSON object (the report of §6.1).
"""
import getpass
import hashlib
import json
import os
import sys
import time

import click

from .private_files import write_private


def _instance(unlock: bool = True):
    """The instance the CLI set up (keys unlocked), or one opened here from the environment."""
    from workers import context
    try:
        return context.instance()
    except RuntimeError:
        pass
    from .manage import open_instance
    inst = open_instance(unlock=unlock)
    context.set_instance(inst)
    return inst


def _operator() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = os.environ.get("USER", "unknown")
    return f"cli:{user}"


def _prepare_matching(instance):
    """Before a waited crawl: take in pending intake submissions and refresh the indexes."""
    from workers import match
    from workers.takein import take_in_pending
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
    from workers.crawl import create_job, crawl, report, run_job
    from workers.queue import queue, workers_listening
    instance = _instance(unlock=True)
    settings = instance.settings
    if not url.startswith(("http://", "https://")):
        raise click.UsageError("URL must start with http:// or https://")
    if wait:
        _prepare_matching(instance)
    job_id = create_job(instance, url, depth=depth, requested_by=_operator())
    bar = click.progressbar(length=max(1, settings.crawl_max_pages), label=f"crawl {job_id}", file=sys.stderr,
                            show_pos=True)
    if workers_listening(settings, "crawl") > 0:
        q = queue(settings, "crawl")
        q.enqueue(run_job, job_id, job_id=f"kesu-crawl-{job_id}", job_timeout=settings.crawl_max_seconds + 300,
                  result_ttl=3600, failure_ttl=7 * 86400)
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

        with bar:
            crawl(instance, job_id, progress=progress)
    if wait:
        click.echo(json.dumps(report(instance, job_id), ensure_ascii=False))
    else:
        click.echo(f"crawl job {job_id} done", err=True)


@click.group("evidence")
def evidence_group():
    """Evidence: the case PDF for lawyers, one capture's files, verification."""


def _known_verify_key():
    """The org verify key of the instance in reach, if there is one (never required)."""
    try:
        from workers import context
        try:
            inst = context.instance()
        except RuntimeError:
            from store.config import load
            from store.instance import Instance
            inst = Instance(load())
            if not inst.initialised():
                return None
        from crypto.sealing import unb64
        return unb64(inst.active_key().bundle["verify_key"])
    except Exception:
        return None


@evidence_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", help="The Ed25519 verify key (base64) the export must be signed with.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(file, key, as_json):
    """Check an exported capture: every byte, the manifest hashes, the signature (exit 1 if not intact)."""
    from crypto.sealing import unb64
    from workers.evidence import verify
    expected = unb64(key) if key else _known_verify_key()
    rep = verify(file, expected)
    if as_json:
        click.echo(json.dumps(rep, ensure_ascii=False, indent=1))
    else:
        if rep["ok"]:
            cap = (rep.get("manifest") or {}).get("capture") or {}
            click.echo(f"OK: {file} is intact; signed by key {rep['signed_by']['key_id']}"
                       f"{' (this instance)' if expected else ' (key not checked against an instance)'}")
            click.echo(f"   {cap.get('url')} captured {cap.get('captured_at')} from {cap.get('server_ip')}")
        else:
            click.echo(f"NOT INTACT: {file}", err=True)
            for problem in rep["problems"]:
                click.echo(f"  - {problem}", err=True)
    sys.exit(0 if rep["ok"] else 1)


@evidence_group.command("capture")
@click.argument("capture_id", type=int)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the export (.zip).")
def export_capture_command(capture_id, out):
    """Export one capture's evidence (WACZ, screenshot, MHTML, HTML, signed manifest) as a ZIP."""
    from workers.crawl import export_capture
    instance = _instance(unlock=True)
    try:
        data = export_capture(instance, capture_id)
    except LookupError as exc:
        raise click.ClickException(str(exc))
    write_private(out, data)                # decrypted captures: staff's eyes only
    from store import audit
    with instance.session() as s:
        audit.record(s, _operator(), "evidence.export_capture", f"capture:{capture_id}",
                     sha256=hashlib.sha256(data).hexdigest())
    click.echo(f"wrote {out} ({len(data)} bytes)", err=True)


@evidence_group.command("export")
@click.argument("case_id", type=int)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the PDF.")
@click.option("--url", default=None, help="Only this URL of the case.")
@click.option("--lang", type=click.Choice(["ja", "en"]), default="ja", show_default=True)
def export_pdf_command(case_id, out, url, lang):
    """The evidence PDF of a case (internal case id) for lawyers: PDF/A-3b, captures attached."""
    from workers.pdf import render
    instance = _instance(unlock=True)
    try:
        data = render(instance, case_id, url=url, language=lang, actor=_operator())
    except LookupError as exc:
        raise click.ClickException(str(exc))
    write_private(out, data)
    click.echo(f"wrote {out} ({len(data)} bytes)", err=True)
