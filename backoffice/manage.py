"""The `kesu` command line (DESIGN.md §6.1)."""
import getpass
import json
import logging
import os
import sys

import click

from crypto.keys import WrongPassphrase
from store.config import load
from store.instance import Instance, NotInitialised

log = logging.getLogger("kesu")


def fail(message: str, code: int = 1):
    click.secho(f"kesu: {message}", fg="red", err=True)
    sys.exit(code)


def read_passphrase(confirm: bool = False, stdin: bool = False) -> str:
    """KESU_KEY_PASSPHRASE, a line on stdin (from `kesu run`), or a terminal prompt."""
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    env = os.environ.get("KESU_KEY_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        fail("no terminal to ask for the key passphrase: set KESU_KEY_PASSPHRASE")
    first = getpass.getpass("Key passphrase: ")
    if confirm:
        if len(first) < 12:
            fail("choose a key passphrase of at least 12 characters")
        if getpass.getpass("Again: ") != first:
            fail("the two passphrases differ")
    return first


def open_instance(unlock: bool = False, passphrase_stdin: bool = False) -> Instance:
    instance = Instance(load())
    if not instance.initialised():
        fail(f"no instance at {instance.settings.instance}: run `kesu init` first")
    if unlock:
        try:
            instance.unlock(read_passphrase(stdin=passphrase_stdin))
        except WrongPassphrase as exc:
            fail(str(exc))
    return instance


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="More log lines on stderr.")
def cli(verbose):
    """kesu: find and remove non-consensually shared images, privately."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


@cli.command()
def init():
    """Create (or upgrade) the instance: database, secrets, org keys sealed by a passphrase."""
    instance = Instance(load())
    fresh = not instance.initialised()
    try:
        key_id = instance.init(read_passphrase(confirm=fresh))
    except WrongPassphrase as exc:
        fail(f"{exc} (the instance exists; give the passphrase it was created with)")
    click.echo(f"{'created' if fresh else 'up to date'}: {instance.settings.instance} (intake key {key_id})", err=True)


@cli.command()
@click.argument("which", type=click.Choice(["intake", "backoffice"]))
@click.option("--passphrase-stdin", is_flag=True, hidden=True)
def serve(which, passphrase_stdin):
    """Serve one of the two web apps with waitress (`kesu run` starts both)."""
    from waitress import serve as waitress_serve
    if which == "intake":
        from intake import create_app
        instance = open_instance()
        host, port = instance.settings.intake_host, instance.settings.intake_port
    else:
        from backoffice import create_app
        instance = open_instance(unlock=True, passphrase_stdin=passphrase_stdin)
        host, port = instance.settings.backoffice_host, instance.settings.backoffice_port
    # trusted_proxy is unset: waitress never rewrites or logs client addresses.
    waitress_serve(create_app(instance), host=host, port=port, threads=8, ident="kesu", _quiet=True)


@cli.command()
@click.option("--queues", default="default,crawl", show_default=True, help="Comma-separated queue names.")
@click.option("--passphrase-stdin", is_flag=True, hidden=True)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
def worker(queues, passphrase_stdin, burst):
    """One RQ worker. The `match` queue runs in a non-forking worker so its index stays in memory."""
    from rq import SimpleWorker, Worker

    from workers import context
    from workers.queue import connection
    instance = open_instance(unlock=True, passphrase_stdin=passphrase_stdin)
    context.set_instance(instance)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    cls = SimpleWorker if "match" in names else Worker
    try:
        conn = connection(instance.settings)
        conn.ping()
    except Exception as exc:
        fail(f"cannot reach Redis ({exc}); is `kesu run` or KESU_REDIS_URL's server up?")
    cls(names, connection=conn).work(burst=burst, with_scheduler=False, logging_level="INFO")


@cli.command()
@click.option("--once", is_flag=True, help="Run what is due now and stop.")
def scheduler(once):
    """Move due schedules from the database into the queues."""
    from workers import schedule
    instance = open_instance()
    schedule.loop(instance, once=once)


@cli.command()
def run():
    """The whole system on this machine: intake :8000, back office :8001, queue, workers, scheduler."""
    from .runner import run_all
    run_all(read_passphrase)


@cli.group()
def staff():
    """Staff accounts."""


@staff.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "staff", "lawyer"]), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def staff_add(email, role, password_stdin):
    """Add a staff member; prints the TOTP secret once, as a URI and a QR code."""
    import segno

    from . import accounts
    instance = open_instance()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {email}: ")
        if getpass.getpass("Again: ") != password:
            fail("the two passwords differ")
    else:
        fail("no terminal to ask for the password: use --password-stdin")
    try:
        secret = accounts.add(instance, email, password, role)
    except ValueError as exc:
        fail(str(exc))
    uri = accounts.provisioning_uri(instance, email.strip().lower(), secret)
    click.echo(uri)
    if sys.stdout.isatty():
        segno.make(uri, error="m").terminal(compact=True)
    click.echo("Scan it now: this secret is not shown again.", err=True)


@cli.command("hash")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def hash_files(files):
    """Server-side signals of local files, one JSON line each."""
    from workers.signals import file_signals
    for path in files:
        click.echo(json.dumps(file_signals(path), ensure_ascii=False))


def _register_commands():
    """Commands that live beside the parts they drive."""
    from .banks_cli import hashes_group
    from .crawl_cli import crawl_command, evidence_group
    from .domains_cli import domains_group
    from .ops_cli import register
    from .patrol import patrol_command
    register(cli)
    cli.add_command(crawl_command, "crawl")
    cli.add_command(evidence_group, "evidence")
    cli.add_command(domains_group, "domains")
    cli.add_command(hashes_group, "hashes")
    cli.add_command(patrol_command, "patrol")


_register_commands()


def main():
    try:
        cli(prog_name="kesu")
    except NotInitialised as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
