"""RFC 3161 timestamps: asking a TSA for a token over a manifest, and checking one.

Parsing and checking are rfc3161-client's (DER parsing, the CMS signature over the signed
attributes, the message digest, the TSA certificate's critical timeStamping EKU, its chain
at the token's time): a token is accepted only when its signature verifies with the TSA's
certificate, that certificate chains to a trusted root (`tsa_ca_file` in the config,
`--tsa-ca` on the command line), and its message imprint is the SHA-256 of exactly these
bytes. Without a trusted root a token cannot be checked, and verification says so.
"""
from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path


class TimestampError(ValueError):
    """Why a token is not acceptable, in words for the report."""


def load_roots(path: str | Path | None) -> list:
    """The trusted TSA certificates (PEM, one or more) in `path`; [] for none."""
    if not path:
        return []
    from cryptography import x509
    return list(x509.load_pem_x509_certificates(Path(path).read_bytes()))


def _signer(response):
    from cryptography import x509
    certs = [x509.load_der_x509_certificate(c) for c in response.signed_data.certificates]
    infos = list(response.signed_data.signer_infos)
    if len(infos) != 1:
        raise TimestampError(f"the token has {len(infos)} signers, not one")
    for cert in certs:
        if cert.issuer == infos[0].issuer and cert.serial_number == infos[0].serial_number:
            return cert
    raise TimestampError("the token does not carry the TSA's certificate (ask the TSA with certReq)")


def _decode(token: bytes):
    from rfc3161_client import PKIStatus, decode_timestamp_response
    try:
        response = decode_timestamp_response(token)
    except Exception as exc:
        raise TimestampError(f"not an RFC 3161 timestamp response ({exc})") from exc
    if response.status != PKIStatus.GRANTED:
        raise TimestampError(f"the TSA did not grant this token (status {response.status})")
    return response


def check(token: bytes, data: bytes, roots: list | None, nonce: int | None = None) -> dict:
    """What a valid token says about `data`; raises TimestampError with the reason otherwise."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from rfc3161_client import VerificationError, VerifierBuilder
    response = _decode(token)
    try:
        signer = _signer(response)
    except TimestampError:
        raise
    except Exception as exc:
        raise TimestampError(f"the token's signed data is malformed ({exc})") from exc
    if not roots:
        raise TimestampError(f"the timestamp (by {signer.subject.rfc4514_string()}) cannot be checked without "
                             "the TSA's CA certificate: give --tsa-ca (or set tsa_ca_file)")
    try:
        VerifierBuilder(roots=list(roots), nonce=nonce).build().verify_message(response, data)
    except VerificationError as exc:
        reason = str(exc)
        if "Mismatch between messages" in reason:
            reason = "the token covers other bytes than this manifest (message imprint differs)"
        raise TimestampError(f"timestamp does not verify: {reason}") from exc
    except Exception as exc:
        raise TimestampError(f"timestamp does not verify: {exc}") from exc
    return {
        "time": response.tst_info.gen_time.isoformat(),
        "tsa": signer.subject.rfc4514_string(),
        "tsa_certificate_sha256": hashlib.sha256(signer.public_bytes(Encoding.DER)).hexdigest(),
        "serial": response.tst_info.serial_number,
    }


def request(tsa_url: str, data: bytes, roots: list | None = None, timeout: float = 30) -> bytes:
    """A token over SHA-256(data) from the TSA at `tsa_url`, checked before it is kept (fully
    when the TSA's CA is configured)."""
    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder
    req = (TimestampRequestBuilder().data(data).hash_algorithm(HashAlgorithm.SHA256)
           .nonce(nonce=True).cert_request(cert_request=True).build())
    http = urllib.request.Request(tsa_url, data=req.as_bytes(), method="POST",
                                  headers={"Content-Type": "application/timestamp-query"})
    with urllib.request.urlopen(http, timeout=timeout) as resp:
        token = resp.read(1 << 20)
    if roots:
        check(token, data, roots, nonce=req.nonce)
    else:        # no CA configured yet: kept if it answers this request; verify needs the CA
        response = _decode(token)
        if response.tst_info.message_imprint.message != hashlib.sha256(data).digest() \
                or response.tst_info.nonce != req.nonce:
            raise TimestampError("the TSA answered for another request")
    return token
