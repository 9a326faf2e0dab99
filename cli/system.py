"""`kesu init`, `serve`, `worker`, `scheduler`, `run` and `status`: the system's processes."""
import json
import sys

import click

from cli.common import fail, open_instance, read_passphrase, warn_missing_contact
from crypto.keys import WrongPassphrase
from store.config import load
from store.instance import FolderMismatch, Instance


@click.command()
def init():
    """Create (or upgrade) the instance: database, secrets, org keys sealed by a passphrase."""
    instance = Instance(load())
    fresh = not instance.initialised()
    try:
        key_id = instance.init(read_passphrase(confirm=fresh))
    except WrongPassphrase as exc:
        fail(f"{exc} (the instance exists; give the passphrase it was created with)")
    except FolderMismatch as exc:
        fail(str(exc))
    click.echo(f"{'created' if fresh else 'up to date'}: {instance.settings.instance} (intake key {key_id})", err=True)
    warn_missing_contact(instance.settings)


@click.command()
@click.argument("which", type=click.Choice(["intake", "backoffice"]))
@click.option("--passphrase-stdin", is_flag=True, hidden=True)
def serve(which, passphrase_stdin):
    """Serve one of the two web apps with waitress (`kesu run` starts both)."""
    from waitress import serve as waitress_serve
    if which == "intake":
        from intake import create_app
        instance = open_instance(check="secrets")
        host, port = instance.settings.intake_host, instance.settings.intake_port
    else:
        from backoffice import create_app
        instance = open_instance(unlock=True, passphrase_stdin=passphrase_stdin, check="keystore")
        host, port = instance.settings.backoffice_host, instance.settings.backoffice_port
    # trusted_proxy is unset: waitress never rewrites or logs client addresses.
    waitress_serve(create_app(instance), host=host, port=port, threads=8, ident="kesu", _quiet=True)


@click.command()
@click.option("--queues", default="default,crawl", show_default=True, help="Comma-separated queue names.")
@click.option("--passphrase-stdin", is_flag=True, hidden=True)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
def worker(queues, passphrase_stdin, burst):
    """One RQ worker. The `match` queue runs in a non-forking worker so its index stays in memory."""
    from workers.system import context
    from workers.system.queue import connection, work_until_stopped
    names = [q.strip() for q in queues.split(",") if q.strip()]
    # Crawl workers drive a browser on hostile sites: they never unlock the org key (they seal to
    # public keys; the matcher matches and signs for them) and need no key store.
    crawl_only = set(names) <= {"crawl"}
    instance = open_instance(unlock=not crawl_only, passphrase_stdin=passphrase_stdin,
                             check="secrets" if crawl_only else "keystore")
    if crawl_only:
        click.echo("kesu: crawl worker: the org key stays locked here (the matcher matches and signs)", err=True)
    context.set_instance(instance)
    context.set_queues(names)
    if "default" in names:             # notices cite the legal regimes: a bad file stops the start
        from workers.takedown import regimes
        try:
            regimes.regimes()
        except regimes.RegimeError as exc:
            fail(str(exc))
    if "crawl" in names:
        from workers.capture.chromium import sandbox_plan
        plan = sandbox_plan()
        if not plan["sandbox"]:        # said loudly at start; the health page says it too
            click.secho(f"kesu: WARNING: the crawler's Chromium has NO SANDBOX here: {plan['why']}", fg="red",
                        bold=True, err=True)
    try:
        connection(instance.settings).ping()
    except Exception as exc:
        fail(f"cannot reach Redis ({exc}); is `kesu run` or KESU_REDIS_URL's server up?")
    work_until_stopped(instance.settings, names, burst=burst)


@click.command()
@click.option("--once", is_flag=True, help="Run what is due now and stop.")
def scheduler(once):
    """Move due schedules from the database into the queues."""
    from workers.system import schedule
    instance = open_instance(check="secrets")
    schedule.loop(instance, once=once)


@click.command()
def run():
    """The whole system on this machine: intake :8000, back office :8001, queue, workers, scheduler."""
    from cli.runner import run_all
    run_all(read_passphrase)



@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
@click.option("--check", is_flag=True, help="Exit with status 2 when something needs attention.")
def status_command(as_json, check):
    """Health of the system: workers, queues, failed jobs, schedules, matcher, mail, disk."""
    import logging
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from workers.system import health
    instance = open_instance()
    status = health.collect(instance)
    click.echo(json.dumps(status, ensure_ascii=False, indent=1) if as_json else health.render_text(status))
    if check and status["problems"]:
        sys.exit(2)


COMMANDS = [init, serve, worker, scheduler, run, status_command]
