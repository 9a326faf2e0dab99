"""What every `kesu` command shares: errors, the key passphrase, the instance, the audit actor."""
import getpass
import os
import sys

import click

from crypto.keys import WrongPassphrase
from store.config import load
from store.instance import Instance

MIN_PASSPHRASE = 12


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
        if len(first) < MIN_PASSPHRASE:
            fail("choose a key passphrase of at least 12 characters")
        if getpass.getpass("Again: ") != first:
            fail("the two passphrases differ")
    return first


def open_instance(unlock: bool = False, passphrase_stdin: bool = False, check: str | None = None) -> Instance:
    """The instance from the environment. `check`: "secrets" or "keystore" refuses to go on when
    this machine's instance folder lacks (or differs from) what the database was made with."""
    from store.instance import FolderMismatch
    instance = Instance(load())
    if not instance.initialised():
        fail(f"no instance at {instance.settings.instance}: run `kesu init` first")
    if check:
        try:
            instance.check_folder(keystore=check == "keystore")
        except FolderMismatch as exc:
            fail(str(exc))
    if unlock:
        try:
            instance.unlock(read_passphrase(stdin=passphrase_stdin))
        except WrongPassphrase as exc:
            fail(str(exc))
    return instance


def new_passphrase() -> str:
    """A new key passphrase: KESU_NEW_KEY_PASSPHRASE or a terminal, asked twice."""
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


def worker_instance(unlock: bool = True):
    """The instance the CLI set up (keys unlocked), or one opened here from the environment."""
    from workers.system import context
    try:
        return context.instance()
    except RuntimeError:
        pass
    inst = open_instance(unlock=unlock)
    context.set_instance(inst)
    return inst


def operator() -> str:
    """The audit actor of a command-line action: the operating-system user."""
    try:
        user = getpass.getuser()
    except Exception:
        user = os.environ.get("USER", "unknown")
    return f"cli:{user}"


def audit_cli(instance, action: str, target: str = "", **detail) -> None:
    """An audit entry by the command line."""
    from store import audit
    with instance.session() as s:
        audit.record(s, "cli", action, target, **detail)



def warn_missing_contact(settings) -> None:
    """A victim must always see a person to reach: say which settings are still unset
    (`kesu status` keeps naming it as a problem until they are)."""
    missing = settings.missing_contact()
    if missing:
        names = ", ".join(f"KESU_{name.upper()}" for name in missing)
        click.echo(f"kesu: warning: the intake shows victims no person to reach until {names} "
                   "(and KESU_ORG_CHAT where you have a chat) are set", err=True)
