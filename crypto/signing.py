"""Ed25519 signatures over canonical JSON (evidence manifests), and key fingerprints."""
import hashlib
import hmac
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


def fingerprint(verify_key: bytes) -> str:
    """The SHA-256 of an Ed25519 verify key in 16 groups of 4 hex digits: what a person reads
    off an evidence PDF or a notice and gives `kesu evidence verify --fingerprint`."""
    digest = hashlib.sha256(verify_key).hexdigest()
    return " ".join(digest[i:i + 4] for i in range(0, 64, 4))


MIN_FINGERPRINT_HEX = 32      # at least the first 128 bits of the fingerprint must be given


def fingerprint_matches(given: str, verify_key: bytes) -> bool:
    """`given` (any case, spaces, colons or dashes) is the key's fingerprint or its first
    MIN_FINGERPRINT_HEX hex digits or more."""
    text = "".join(c for c in (given or "").lower() if c not in " :-\t")
    if len(text) < MIN_FINGERPRINT_HEX or any(c not in "0123456789abcdef" for c in text):
        return False
    full = hashlib.sha256(verify_key).hexdigest()
    return hmac.compare_digest(full[:len(text)], text)
