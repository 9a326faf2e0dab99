"""`kesu staff ...`: staff accounts (add, list, disable, enable, role, reset-totp). Every change audited."""
import getpass
import json
import sys

import click

from cli.common import fail, open_instance


@click.group("staff")
def staff_group():
    """Staff accounts."""


@staff_group.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "staff", "lawyer"]), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def staff_add(email, role, password_stdin):
    """Add a staff member; prints the TOTP secret once, as a URI and a QR code."""
    import segno

    from backoffice import accounts
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


def _staff_call(fn, *args):
    from backoffice import staffadmin
    instance = open_instance()
    try:
        return instance, fn(instance, "cli", *args)
    except staffadmin.StaffError as exc:
        fail(str(exc))


@staff_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
def staff_list(as_json):
    """List staff accounts."""
    from backoffice import staffadmin
    rows = staffadmin.list_staff(open_instance())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        click.echo(f"{r['id']:>4}  {r['email']:<40} {r['role']:<7} {'active' if r['active'] else 'DISABLED':<8}"
                   f" sessions {r['sessions']}" + ("  (throttled)" if r["throttled"] else ""))


@staff_group.command("disable")
@click.argument("who", metavar="EMAIL")
def staff_disable(who):
    """Disable an account; its open sessions end at once."""
    from backoffice import staffadmin
    _staff_call(staffadmin.disable, who)
    click.echo(f"disabled: {who}")


@staff_group.command("enable")
@click.argument("who", metavar="EMAIL")
def staff_enable(who):
    """Re-enable a disabled account."""
    from backoffice import staffadmin
    _staff_call(staffadmin.enable, who)
    click.echo(f"enabled: {who}")


@staff_group.command("role")
@click.argument("who", metavar="EMAIL")
@click.argument("role", type=click.Choice(["admin", "staff", "lawyer"]))
def staff_role(who, role):
    """Change an account's role."""
    from backoffice import staffadmin
    _, result = _staff_call(staffadmin.set_role, who, role)
    click.echo(f"{who}: {result['old']} -> {result['role']}")


@staff_group.command("reset-totp")
@click.argument("who", metavar="EMAIL")
def staff_reset_totp(who):
    """A new TOTP secret, printed once as a URI and a QR code; open sessions end."""
    import segno

    from backoffice import accounts, staffadmin
    instance, (email, secret) = _staff_call(staffadmin.reset_totp, who)
    uri = accounts.provisioning_uri(instance, email, secret)
    click.echo(uri)
    if sys.stdout.isatty():
        segno.make(uri, error="m").terminal(compact=True)
    click.echo("Scan it now: this secret is not shown again.", err=True)

