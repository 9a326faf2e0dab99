"""Operations on the command line: backup, restore, keys, staff management, status.

The lead registers these on the `kesu` group in manage.py (see `register`).
Passphrases come from a terminal (asked twice for a new one) or, for scripts, from
KESU_KEY_PASSPHRASE (the current one) and KESU_NEW_KEY_PASSPHRASE (the new one).
"""
from __future__ import annotations

import getpass
import json
import os
import sys

import click

MIN_PASSPHRASE = 12


def _manage():
    from . import manage
    return manage


def _new_passphrase() -> str:
    fail = _manage().fail
    env = os.environ.get("KESU_NEW_KEY_PASSPHRASE")
    if env is not None:
        new = env
    elif sys.stdin.isatty():
        new = getpass.getpass("New key passphrase: ")
        if getpass.getpass("Again: ") != new:
            fail("the two passphrases differ")
    else:
        fail("no terminal to ask for the new key passphrase: set KESU_NEW_KEY_PASSPHRASE")
    if len(new) < MIN_PASSPHRASE:
        fail(f"choose a key passphrase of at least {MIN_PASSPHRASE} characters")
    return new


def _audit(instance, action: str, target: str = "", **detail) -> None:
    from store import audit
    with instance.session() as s:
        audit.record(s, "cli", action, target, **detail)


# --- backup and restore ----------------------------------------------------------------------

@click.command("backup")
@click.argument("directory", type=click.Path(file_okay=False))
def backup_command(directory):
    """Back up the instance into DIRECTORY: kesu-<time>/ and, apart, keystore-<time>/.

    Key-store backups in DIRECTORY older than keystore_backup_days are destroyed.
    """
    from store import backup
    m = _manage()
    instance = m.open_instance()
    try:
        result = backup.create(instance, directory)
    except (backup.BackupError, OSError) as exc:
        m.fail(str(exc))
    _audit(instance, "backup.create", result.stamp, pruned=len(result.pruned))
    click.echo(f"database, blobs, secrets, config: {result.main}")
    click.echo(f"key store (kept {instance.settings.keystore_backup_days} days): {result.keystore}")
    for path in result.pruned:
        click.echo(f"destroyed expired key-store backup: {path}")
    click.echo("Keep the two apart (another disk or place); the key store decrypts the cases.", err=True)


@click.command("restore")
@click.argument("backup_path", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--keystore", "keystore", type=click.Path(exists=True, file_okay=False),
              help="Key-store backup to restore (default: the one taken with the backup).")
@click.option("--no-keystore", is_flag=True, help="Restore without any key store (nothing decrypts).")
def restore_command(backup_path, keystore, no_keystore):
    """Restore a backup (DIR: a kesu-<time> folder or the folder holding them, newest first)
    into a fresh instance (KESU_INSTANCE, KESU_DATABASE_URL)."""
    from store import backup
    from store.config import load
    from store.instance import Instance
    m = _manage()
    try:
        summary = backup.restore(backup_path, keystore=keystore, with_keystore=not no_keystore)
    except (backup.BackupError, OSError) as exc:
        m.fail(str(exc))
    instance = Instance(load())
    _audit(instance, "backup.restore", summary["taken"], keystore=summary["keystore_taken"])
    click.echo(json.dumps(summary, ensure_ascii=False, indent=1))
    if summary["keystore"] is None:
        click.echo("No key store restored: case data cannot be decrypted.", err=True)
    click.echo("Restored. Start it with the same key passphrase (`kesu run`); `kesu init` is not needed.", err=True)


# --- keys ------------------------------------------------------------------------------------

@click.group("key")
def key_group():
    """The org key: change its passphrase, rotate it."""


@key_group.command("passphrase")
def key_passphrase():
    """Change the admin key passphrase (every key bundle re-wrapped; no data re-encrypted)."""
    from crypto.keys import WrongPassphrase
    m = _manage()
    instance = m.open_instance()
    old = m.read_passphrase()
    try:
        instance.unlock(old)
    except WrongPassphrase as exc:
        m.fail(str(exc))
    new = _new_passphrase()
    try:
        ids = instance.change_passphrase(old, new)
    except WrongPassphrase as exc:
        m.fail(f"{exc} (an older key bundle does not open with it; nothing was changed)")
    _audit(instance, "key.passphrase", "org_keys", keys=ids)
    click.echo(f"key passphrase changed for {len(ids)} key bundle(s). Restart running kesu processes "
               "with the new passphrase.", err=True)


@key_group.command("rotate")
def key_rotate():
    """Make a new org intake key; old keys stay to open what was sealed to them."""
    from crypto.keys import WrongPassphrase
    from workers.queue import QUEUES, workers_listening
    m = _manage()
    instance = m.open_instance()
    try:
        old, new, counts = instance.rotate_key(m.read_passphrase())
    except WrongPassphrase as exc:
        m.fail(str(exc))
    _audit(instance, "key.rotate", new, previous=old, **counts)
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
    m = _manage()
    instance = m.open_instance()
    try:
        instance.unlock(m.read_passphrase())
    except WrongPassphrase as exc:
        m.fail(str(exc))
    counts = instance.reseal()
    _audit(instance, "key.reseal", instance.active_key().key_id, **counts)
    click.echo(json.dumps(counts))


# --- staff -----------------------------------------------------------------------------------

def _staff_call(fn, *args):
    from . import staffadmin
    m = _manage()
    instance = m.open_instance()
    try:
        return instance, fn(instance, "cli", *args)
    except staffadmin.StaffError as exc:
        m.fail(str(exc))


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
def staff_list(as_json):
    """List staff accounts."""
    from . import staffadmin
    rows = staffadmin.list_staff(_manage().open_instance())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        click.echo(f"{r['id']:>4}  {r['email']:<40} {r['role']:<7} {'active' if r['active'] else 'DISABLED':<8}"
                   f" sessions {r['sessions']}" + ("  (throttled)" if r["throttled"] else ""))


@click.command("disable")
@click.argument("who", metavar="EMAIL")
def staff_disable(who):
    """Disable an account; its open sessions end at once."""
    from . import staffadmin
    _staff_call(staffadmin.disable, who)
    click.echo(f"disabled: {who}")


@click.command("enable")
@click.argument("who", metavar="EMAIL")
def staff_enable(who):
    """Re-enable a disabled account."""
    from . import staffadmin
    _staff_call(staffadmin.enable, who)
    click.echo(f"enabled: {who}")


@click.command("role")
@click.argument("who", metavar="EMAIL")
@click.argument("role", type=click.Choice(["admin", "staff", "lawyer"]))
def staff_role(who, role):
    """Change an account's role."""
    from . import staffadmin
    _, result = _staff_call(staffadmin.set_role, who, role)
    click.echo(f"{who}: {result['old']} -> {result['role']}")


@click.command("reset-totp")
@click.argument("who", metavar="EMAIL")
def staff_reset_totp(who):
    """A new TOTP secret, printed once as a URI and a QR code; open sessions end."""
    import segno

    from . import accounts, staffadmin
    instance, (email, secret) = _staff_call(staffadmin.reset_totp, who)
    uri = accounts.provisioning_uri(instance, email, secret)
    click.echo(uri)
    if sys.stdout.isatty():
        segno.make(uri, error="m").terminal(compact=True)
    click.echo("Scan it now: this secret is not shown again.", err=True)


staff_ops = [staff_list, staff_disable, staff_enable, staff_role, staff_reset_totp]


# --- status ----------------------------------------------------------------------------------

@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
@click.option("--check", is_flag=True, help="Exit with status 2 when something needs attention.")
def status_command(as_json, check):
    """Health of the system: workers, queues, failed jobs, schedules, matcher, mail, disk."""
    import logging
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from workers import health
    instance = _manage().open_instance()
    status = health.collect(instance)
    click.echo(json.dumps(status, ensure_ascii=False, indent=1) if as_json else health.render_text(status))
    if check and status["problems"]:
        sys.exit(2)


def register(cli) -> None:
    """Add every command here to the `kesu` group (and the staff commands to `kesu staff`)."""
    cli.add_command(backup_command, "backup")
    cli.add_command(restore_command, "restore")
    cli.add_command(key_group, "key")
    cli.add_command(status_command, "status")
    staff = cli.commands.get("staff")
    if staff is not None:
        for command in staff_ops:
            staff.add_command(command)
