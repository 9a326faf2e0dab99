"""`kesu backup DIR` and `kesu restore DIR`: the instance, with the key store kept apart."""
import json
import os
import sys

import click

from cli.common import audit_cli, fail, open_instance, read_passphrase


@click.command("backup")
@click.argument("directory", type=click.Path(file_okay=False))
def backup_command(directory):
    """Back up the instance into DIRECTORY: kesu-<time>/ and, apart, keystore-<time>/.

    Key-store backups in DIRECTORY older than keystore_backup_days are destroyed.
    """
    from store import backup
    # With the key at hand (KESU_KEY_PASSPHRASE or a terminal) the audit log's head is signed
    # into the backup; without it the head is recorded unsigned.
    instance = open_instance(unlock=bool(os.environ.get("KESU_KEY_PASSPHRASE")) or sys.stdin.isatty())
    try:
        result = backup.create(instance, directory)
    except (backup.BackupError, OSError) as exc:
        fail(str(exc))
    audit_cli(instance, "backup.create", result.stamp, pruned=len(result.pruned))
    click.echo(f"database, blobs, secrets, config: {result.main}")
    click.echo(f"key store (kept {instance.settings.keystore_backup_days} days): {result.keystore}")
    for path in result.pruned:
        click.echo(f"destroyed expired key-store backup: {path}")
    if not instance.unlocked:
        click.echo("The audit log's head is recorded unsigned (no key passphrase given).", err=True)
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
    try:
        main, _ = backup.resolve(backup_path)
        # secrets sealed to the org key, values sealed to cases: the org key passphrase opens them
        passphrase = read_passphrase() if backup.needs_passphrase(backup.read_manifest(main, verify=False)) else None
        summary = backup.restore(backup_path, keystore=keystore, with_keystore=not no_keystore, passphrase=passphrase)
    except (backup.BackupError, OSError) as exc:
        fail(str(exc))
    instance = Instance(load())
    audit_cli(instance, "backup.restore", summary["taken"], keystore=summary["keystore_taken"])
    click.echo(json.dumps(summary, ensure_ascii=False, indent=1))
    if summary["keystore"] is None:
        click.echo("No key store restored: case data cannot be decrypted.", err=True)
    click.echo("Restored. Start it with the same key passphrase (`kesu run`); `kesu init` is not needed.", err=True)
    for problem in summary["audit"]["problems"]:
        click.echo(f"AUDIT LOG: {problem}", err=True)
    if summary["audit"]["problems"]:
        sys.exit(1)

