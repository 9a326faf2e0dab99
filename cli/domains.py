"""`kesu domains ...`: the domain database from the command line."""
import sys
import time

import click


@click.group("domains")
def domains_group():
    """The domain database (sites, contacts, hosting providers)."""


@domains_group.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--show-bad", default=50, show_default=True, help="How many bad rows to list (0: all).")
def import_command(csv_file, show_bad):
    """Load CSV_FILE (UTF-8 with or without BOM, or CP932) with a header row naming its columns:
    domain, site name, kind, country, language, contact email, contact form URL, hosting provider, notes.
    Rows for known domains are updated; bad rows are reported and skipped."""
    from backoffice.domains import ImportError_, decode, import_csv
    from cli.common import fail, open_instance

    data = sys.stdin.buffer.read() if csv_file == "-" else open(csv_file, "rb").read()
    instance = open_instance()
    started = time.perf_counter()
    try:
        text, _enc = decode(data)
        total = max(0, text.count("\n") - 1) or 1
        with click.progressbar(length=total, label="importing", file=sys.stderr,
                               show_pos=True, show_eta=False) as bar:
            report = import_csv(instance, data, progress=bar.update)
            bar.update(total)
    except ImportError_ as exc:
        fail(str(exc))
    elapsed = time.perf_counter() - started
    err = lambda m: click.echo(m, err=True)  # noqa: E731
    err(f"read {report.rows} row(s) ({report.encoding}) in {elapsed:.2f} s: "
        f"{report.inserted} new, {report.updated} updated, {len(report.bad)} bad, "
        f"{len(report.duplicates)} repeated")
    if report.ignored_columns:
        err("ignored column(s): " + ", ".join(report.ignored_columns))
    listed = report.bad if not show_bad else report.bad[:show_bad]
    for line, reason in listed:
        err(f"  line {line}: {reason}")
    if len(listed) < len(report.bad):
        err(f"  ... and {len(report.bad) - len(listed)} more bad row(s)")
    for line, domain in report.duplicates[:show_bad or None]:
        err(f"  line {line}: {domain} repeated, this later line wins")
    # stdout: one machine-readable line
    click.echo(f'{{"rows": {report.rows}, "inserted": {report.inserted}, "updated": {report.updated}, '
               f'"bad": {len(report.bad)}, "encoding": "{report.encoding}"}}')
    if report.good == 0 and report.bad:
        sys.exit(2)
