"""Ed25519 signatures over canonical JSON (evidence manifests)."""
import json

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import CryptoError
from .sealing import b64, unb64


def canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(signing_key: bytes, document: dict) -> str:
    return b64(SigningKey(signing_key).sign(canonical(document)).signature)


def verify(verify_key: bytes, document: dict, signature: str) -> None:
    try:
        VerifyKey(verify_key).verify(canonical(document), unb64(signature))
    except (BadSignatureError, ValueError) as exc:
        raise CryptoError("signature does not verify") from exc
