"""`kesu key ...`: the org key's passphrase, rotation and re-sealing.

Passphrases come from a terminal (asked twice for a new one) or, for scripts, from
KESU_KEY_PASSPHRASE (the current one) and KESU_NEW_KEY_PASSPHRASE (the new one).
"""
import json

import click

from cli.common import audit_cli, fail, new_passphrase, open_instance, read_passphrase


@click.group("key")
def key_group():
    """The org key: change its passphrase, rotate it."""


@key_group.command("passphrase")
def key_passphrase():
    """Change the admin key passphrase (every key bundle re-wrapped; no data re-encrypted)."""
    from crypto.keys import WrongPassphrase
    instance = open_instance()
    old = read_passphrase()
    try:
        instance.unlock(old)
    except WrongPassphrase as exc:
        fail(str(exc))
    new = new_passphrase()
    try:
        ids = instance.change_passphrase(old, new)
    except WrongPassphrase as exc:
        fail(f"{exc} (an older key bundle does not open with it; nothing was changed)")
    audit_cli(instance, "key.passphrase", "org_keys", keys=ids)
    click.echo(f"key passphrase changed for {len(ids)} key bundle(s). Restart running kesu processes "
               "with the new passphrase.", err=True)


@key_group.command("rotate")
def key_rotate():
    """Make a new org intake key; old keys stay to open what was sealed to them."""
    from crypto.keys import WrongPassphrase
    from workers.system.queue import QUEUES, workers_listening
    instance = open_instance()
    try:
        old, new, counts = instance.rotate_key(read_passphrase())
    except WrongPassphrase as exc:
        fail(str(exc))
    audit_cli(instance, "key.rotate", new, previous=old, **counts)
    click.echo(new)
    click.echo(f"new intake key {new} (was {old}); re-sealed {counts['resealed']} key(s) to it"
               + (f", {counts['unreadable']} did not open" if counts["unreadable"] else ""), err=True)
    if any(workers_listening(instance.settings, q) for q in QUEUES):
        click.echo("Workers are running: restart `kesu run` / every `kesu worker` and the back office "
                   "so they load the new key, then run `kesu key reseal` once for what they wrote meanwhile.",
                   err=True)


@key_group.command("reseal")
def key_reseal():
    """Re-seal to the active key what a process still running on an older key wrote."""
    from crypto.keys import WrongPassphrase
    instance = open_instance()
    try:
        instance.unlock(read_passphrase())
    except WrongPassphrase as exc:
        fail(str(exc))
    counts = instance.reseal()
    audit_cli(instance, "key.reseal", instance.active_key().key_id, **counts)
    click.echo(json.dumps(counts))



@key_group.command("rewrap")
def key_rewrap():
    """Put under each case's key what was sealed to the org key before case seal keys existed
    (matched captures' keys, matched media's signals, notice archives). Run once after upgrading."""
    from crypto.keys import WrongPassphrase
    from store import casekeys
    instance = open_instance()
    try:
        instance.unlock(read_passphrase())
    except WrongPassphrase as exc:
        fail(str(exc))
    counts = casekeys.rewrap(instance)
    audit_cli(instance, "key.rewrap", instance.active_key().key_id, **counts)
    click.echo(json.dumps(counts))
