"""`kesu patrol`: patrol the due domains now, or fill the crawl queue for the workers."""
import click

from cli.common import open_instance
from store.models import Domain


@click.command("patrol")
@click.option("--domain", "domains", multiple=True, help="Patrol only this domain (repeatable), due or not.")
@click.option("--limit", type=int, default=None, help="At most this many due domains.")
@click.option("--fill", "fill_only", is_flag=True, help="Only put due domains on the crawl queue (for the workers).")
def patrol_command(domains, limit, fill_only):
    """Patrol due domains now in this process (one browser), or --fill the crawl queue.
    Prints one JSON line per run (pages, bytes, media, matches, errors, what stopped it)."""
    import json

    from sqlalchemy import select

    from workers.capture import patrol as P
    instance = open_instance(unlock=True)
    if fill_only:
        click.echo(json.dumps({"queued": P.fill(instance)}))
        return
    if domains:
        with instance.session() as s:
            ids = list(s.execute(select(Domain.id).where(Domain.domain.in_(domains))).scalars())
        from workers.capture.crawl import start_browser
        driver = start_browser(instance.settings)
        try:
            runs = [P.patrol_site(instance, i, driver=driver) for i in ids]
        finally:
            driver.quit()
    else:
        runs = P.patrol(instance, limit=limit,
                        progress=lambda p: click.echo(f"{p.get('domain')} {p.get('url')}", err=True))
    for r in runs:
        click.echo(json.dumps({k: v for k, v in r.items() if k != "detail"}))

