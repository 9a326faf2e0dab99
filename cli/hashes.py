"""`kesu hashes ...`: share a case's hashes (only with her consent) and import hash banks.

The org key is unlocked from KESU_KEY_PASSPHRASE or a prompt (the case key is needed to read the hashes).
"""
import sys

import click

from cli.private_files import write_private


@click.group("hashes")
def hashes_group():
    """Hash sharing (with the victim's consent only) and imported hash banks."""


@hashes_group.command("export")
@click.argument("case_id", metavar="CASE", type=int)
@click.option("--format", "fmt", type=click.Choice(["hma", "csv"]), default="hma", show_default=True,
              help="hma: JSON lines for Hasher-Matcher-Actioner's bank API (pdq, video_md5); "
                   "csv: signal_type,signal_value (pdq, md5).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="File to write (mode 0600), or - for stdout.")
def export_command(case_id, fmt, out):
    """Export the PDQ and MD5 hashes of CASE (the internal case id). Refused unless the
    victim consented to sharing her hashes. Audited."""
    from cli.common import fail, open_instance
    from workers.matching.banks import ConsentError, export_case
    instance = open_instance(unlock=True)
    try:
        data, summary = export_case(instance, case_id, fmt, actor="cli")
    except ConsentError as exc:
        fail(f"refused: {exc}")
    write_private(out, data)
    note = f"; {summary['left_out']} photo MD5(s) left out (HMA has no type for them; use --format csv)" \
        if summary["left_out"] else ""
    click.echo(f"case {case_id}: {summary['pdq']} PDQ, {summary['md5']} MD5 written ({fmt}){note}", err=True)


@hashes_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--bank", "bank", required=True, help="Bank name (letters, digits, . _ -).")
@click.option("--category", type=click.Choice(["adult_ncii", "minor", "deepfake", "voyeur", "coerced_av"]),
              default="adult_ncii", show_default=True, help="How matches of this bank are routed.")
@click.option("--language", type=click.Choice(["ja", "en"]), default="ja", show_default=True,
              help="Language of notices for this bank's matches.")
def import_command(file, bank, category, language):
    """Import FILE (HMA JSON lines or array, signal_type,signal_value CSV, ThreatExchange
    dataset CSV, or `pdq <hash>` lines) as the bank NAME, matched and routed like a case."""
    from cli.common import fail, open_instance
    from workers.matching.banks import BankError, import_bank
    data = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()
    instance = open_instance(unlock=True)
    try:
        result = import_bank(instance, data, bank, actor="cli", category=category, language=language)
    except BankError as exc:
        fail(str(exc))
    click.echo(f"bank {bank} (case {result['case']}): {result['added']} added, {result['known']} already held, "
               f"{result['skipped']} row(s) not understood", err=True)
    click.echo(f'{{"case": {result["case"]}, "added": {result["added"]}, "known": {result["known"]}, '
               f'"skipped": {result["skipped"]}}}')


@hashes_group.command("delete-bank")
@click.argument("bank")
def delete_bank_command(bank):
    """Remove the imported bank BANK completely."""
    from cli.common import fail, open_instance
    from workers.matching.banks import delete_bank
    instance = open_instance(unlock=True)
    case_id = delete_bank(instance, bank, actor="cli")
    if case_id is None:
        fail(f"no bank {bank!r}")
    click.echo(f"bank {bank} (case {case_id}) removed", err=True)
