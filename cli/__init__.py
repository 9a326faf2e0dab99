"""The `kesu` command line (DESIGN.md §6.1): one module per command group, shared helpers in
cli.common. The command line imports the apps and the workers; nothing imports it."""
import logging
import sys

import click

from cli import (
    backup,
    crawl,
    domains,
    evidence,
    hash,
    hashes,
    keys,
    patrol,
    staff,
    system,
)
from cli.common import fail
from store.instance import NotInitialised


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="More log lines on stderr.")
def cli(verbose):
    """kesu: find and remove non-consensually shared images, privately."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


for _command in [*system.COMMANDS, staff.staff_group, hash.hash_files, crawl.crawl_command,
                 evidence.evidence_group, domains.domains_group, hashes.hashes_group,
                 backup.backup_command, backup.restore_command, keys.key_group, patrol.patrol_command]:
    cli.add_command(_command)


def main():
    try:
        cli(prog_name="kesu")
    except NotInitialised as exc:
        fail(str(exc))
