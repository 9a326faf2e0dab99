"""`kesu hash FILE...`: server-side signals of local files, one JSON line each (DESIGN.md §6.1)."""
import json

import click


@click.command("hash")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def hash_files(files):
    """Server-side signals of local files, one JSON line each."""
    from workers.signals.media import file_signals
    for path in files:
        click.echo(json.dumps(file_signals(path), ensure_ascii=False))

