"""`kesu evidence ...`: the case PDF for lawyers, one capture's files, and verification."""
import hashlib
import json
import sys

import click

from cli.common import operator, worker_instance
from cli.private_files import write_private


@click.group("evidence")
def evidence_group():
    """Evidence: the case PDF for lawyers, one capture's files, verification."""


def _known_verify_key():
    """The org verify key of the instance in reach, if there is one (never required)."""
    try:
        from workers.system import context
        try:
            inst = context.instance()
        except RuntimeError:
            from store.config import load
            from store.instance import Instance
            inst = Instance(load())
            if not inst.initialised():
                return None
        from crypto.sealing import unb64
        return unb64(inst.active_key().bundle["verify_key"])
    except Exception:
        return None


@evidence_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", help="The Ed25519 verify key (base64) the export must be signed with.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(file, key, as_json):
    """Check an exported capture (ZIP) or evidence PDF: every byte, the signature (exit 1 if not intact)."""
    from crypto.sealing import unb64
    from workers.capture.evidence import verify
    from workers.capture.pdf import verify_pdf
    expected = unb64(key) if key else _known_verify_key()
    with open(file, "rb") as fh:
        is_pdf = fh.read(5) == b"%PDF-"
    rep = (verify_pdf if is_pdf else verify)(file, expected)
    if as_json:
        click.echo(json.dumps(rep, ensure_ascii=False, indent=1))
    else:
        if rep["ok"]:
            cap = (rep.get("manifest") or {}).get("capture") or {}
            click.echo(f"OK: {file} is intact; signed by key {rep['signed_by']['key_id']}"
                       f"{' (this instance)' if expected else ' (key not checked against an instance)'}")
            if is_pdf:
                click.echo(f"   evidence PDF of case {rep['manifest']['case']}, signed {rep['manifest']['signed_at']}")
            else:
                click.echo(f"   {cap.get('url')} captured {cap.get('captured_at')} from {cap.get('server_ip')}")
        else:
            click.echo(f"NOT INTACT: {file}", err=True)
            for problem in rep["problems"]:
                click.echo(f"  - {problem}", err=True)
    sys.exit(0 if rep["ok"] else 1)


@evidence_group.command("capture")
@click.argument("capture_id", type=int)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the export (.zip).")
def export_capture_command(capture_id, out):
    """Export one capture's evidence (WACZ, screenshot, MHTML, HTML, signed manifest) as a ZIP."""
    from workers.capture.crawl import export_capture
    instance = worker_instance(unlock=True)
    try:
        data = export_capture(instance, capture_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    write_private(out, data)                # decrypted captures: staff's eyes only
    from store import audit
    with instance.session() as s:
        audit.record(s, operator(), "evidence.export_capture", f"capture:{capture_id}",
                     sha256=hashlib.sha256(data).hexdigest())
    click.echo(f"wrote {out} ({len(data)} bytes)", err=True)


@evidence_group.command("export")
@click.argument("case_id", type=int)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the PDF.")
@click.option("--url", default=None, help="Only this URL of the case.")
@click.option("--lang", type=click.Choice(["ja", "en"]), default="ja", show_default=True)
def export_pdf_command(case_id, out, url, lang):
    """The evidence PDF of a case (internal case id) for lawyers: PDF/A-3b, captures attached."""
    from workers.capture.pdf import render
    instance = worker_instance(unlock=True)
    try:
        data = render(instance, case_id, url=url, language=lang, actor=operator())
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    write_private(out, data)
    click.echo(f"wrote {out} ({len(data)} bytes)", err=True)

