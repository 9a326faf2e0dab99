"""Evidence signatures from a process that holds the org signing key, for crawl workers that do not.

A crawl worker drives a browser on sites run by the people who post the images, so it holds
public keys only (DESIGN §3). When a page matched, it builds the manifest and asks the keyed
long-lived worker on the `match` queue (the matcher) to sign it: the manifest travels sealed to
the org public key (it names matched media by SHA-256, one of her signals), the answer is the
signature document (public by nature). With the key unlocked in this process (a lone
`kesu crawl`, the tests) it signs here.
"""
from __future__ import annotations

import logging

from crypto.sealing import b64, seal, unb64, unseal
from workers.capture import evidence as ev

log = logging.getLogger("kesu.signer")

ASK_SECONDS = 60


class SignerUnavailable(RuntimeError):
    """No keyed worker answered: the page is written on the job's next attempt, not unsigned."""


class PublicKeys:
    """The org key's public halves, as build_manifest names them (from the stored bundle)."""

    def __init__(self, instance):
        row = instance.active_key()
        self.key_id = row.key_id
        self.public_key = unb64(row.bundle["public_key"])
        self.verify_key = unb64(row.bundle["verify_key"])


def sign(instance, manifest: dict) -> tuple[bytes, bytes]:
    """(manifest bytes, signature document) for `manifest`, signed here or by the keyed worker."""
    if instance.unlocked:
        return ev.sign_manifest(manifest, instance.private_keys())
    from workers.system.queue import connection, queue, workers_listening
    settings = instance.settings
    if not workers_listening(settings, "match"):     # (a crawl-only worker: never the match queue's)
        raise SignerUnavailable("no keyed worker (kesu worker --queues match) is running to sign evidence")
    body = ev.canonical(manifest)
    public = unb64(instance.public_key()[1])
    job = queue(settings, "match", connection(settings)).enqueue(
        "workers.capture.signer.sign_job", b64(seal(public, body)), result_ttl=60, failure_ttl=600,
        job_timeout=ASK_SECONDS, at_front=True, description="sign(sealed manifest)")
    result = job.latest_result(timeout=ASK_SECONDS)
    if result is None or result.type != result.Type.SUCCESSFUL:
        job.cancel()
        raise SignerUnavailable("the keyed worker did not sign in time")
    return body, unb64(result.return_value)


def sign_job(sealed_b64: str) -> str:
    """RQ job (match queue, keyed worker): sign a sealed manifest; returns the signature document."""
    import json

    from workers.system.context import instance as current
    inst = current()
    keys = inst.private_keys()
    manifest = json.loads(unseal(keys.private_key, unb64(sealed_b64)))
    _body, signature = ev.sign_manifest(manifest, keys)
    return b64(signature)
