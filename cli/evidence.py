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


def _instance_in_reach():
    """The instance this command's settings name (KESU_INSTANCE, config.toml), if it exists."""
    from store.config import load
    from store.instance import Instance
    try:
        inst = Instance(load())
        return inst if inst.initialised() else None
    except Exception:            # no database there, or not one of ours: nothing in reach
        return None


def _pin(keys, fingerprints, inst):
    """The keys an export may be signed with: given on the command line, else the instance's own
    (every key it has signed with, rotated ones included), else none (verification then fails)."""
    from crypto.sealing import unb64
    from workers.capture.evidence import Pin
    if keys or fingerprints:
        return Pin([unb64(k) for k in keys], fingerprints,
                   source="pinned by --key" if keys and not fingerprints else "pinned by --fingerprint")
    if inst is None:
        return Pin()
    from sqlalchemy import select

    from store.models import OrgKey
    with inst.session() as s:
        bundles = s.execute(select(OrgKey.bundle)).scalars().all()
    return Pin([unb64(b["verify_key"]) for b in bundles], source="this instance")


@evidence_group.command("fingerprint")
def fingerprint_command():
    """The fingerprints of this instance's evidence signing keys (the active one first):
    publish the active one (web site, letterhead) so that anyone can pin it when verifying."""
    from sqlalchemy import select

    from crypto.sealing import unb64
    from crypto.signing import fingerprint
    from store.models import OrgKey
    inst = _instance_in_reach()
    if inst is None:
        raise click.ClickException("no instance here (KESU_INSTANCE): nothing to print")
    with inst.session() as s:
        rows = s.execute(select(OrgKey).order_by(OrgKey.active.desc(), OrgKey.created_at.desc())).scalars().all()
    for row in rows:
        state = "active" if row.active else "earlier"
        click.echo(f"{fingerprint(unb64(row.bundle['verify_key']))}  ({state}, key {row.key_id})")


@evidence_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--fingerprint", "fingerprints", multiple=True,
              help="The signing key's fingerprint (SHA-256, as printed in the evidence PDF and notices; "
                   "at least its first 32 hex digits).")
@click.option("--key", "keys", multiple=True, help="The Ed25519 verify key (base64) the file must be signed with.")
@click.option("--tsa-ca", type=click.Path(exists=True, dir_okay=False),
              help="PEM certificate(s) of the timestamp authority's CA (default: the instance's tsa_ca_file).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(file, fingerprints, keys, tsa_ca, as_json):
    """Check an exported capture (ZIP) or evidence PDF: every byte, a signature by a pinned key,
    the RFC 3161 timestamp (exit 1 if any fails). Without --fingerprint or --key the signing
    key must be one of the instance's own."""
    from crypto.sealing import unb64
    from workers.capture.evidence import verify
    from workers.capture.pdf import verify_pdf
    from workers.capture.timestamp import load_roots
    inst = _instance_in_reach()
    pin = _pin(keys, fingerprints, inst)
    roots = load_roots(tsa_ca or (inst.settings.tsa_ca_file if inst else ""))
    with open(file, "rb") as fh:
        is_pdf = fh.read(5) == b"%PDF-"
    rep = (verify_pdf if is_pdf else verify)(file, pin, roots)
    rep["pinned_by"] = pin.source or None
    if inst is not None and rep.get("audit_head") and rep.get("signed_by") \
            and _pin((), (), inst).accepts(unb64(rep["signed_by"]["verify_key"])):
        # The export carries the audit log's head when it was made: this instance's log must
        # still reach it (a cut or rewritten end shows here).
        from store import audit
        with inst.session() as session:
            rep["problems"] += audit.check_anchor(session, rep["audit_head"], signed=False)
        rep["ok"] = not rep["problems"]
    if as_json:
        click.echo(json.dumps(rep, ensure_ascii=False, indent=1, default=str))
    else:
        if rep["ok"]:
            cap = (rep.get("manifest") or {}).get("capture") or {}
            click.echo(f"OK: {file} is intact; signed by key {rep['signed_by']['key_id']} ({pin.source})")
            click.echo(f"   key fingerprint {rep['signed_by']['fingerprint']}")
            if is_pdf:
                click.echo(f"   evidence PDF of case {rep['manifest']['case']}, signed {rep['manifest']['signed_at']}")
            else:
                click.echo(f"   {cap.get('url')} captured {cap.get('captured_at')} from {cap.get('server_ip')}")
            if rep.get("timestamp"):
                ts = rep["timestamp"]
                click.echo(f"   timestamp {ts['time']} by {ts['tsa']}")
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

