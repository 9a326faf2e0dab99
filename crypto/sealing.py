"""Sealed boxes (X25519, libsodium crypto_box_seal): what browsers send us.

The browser's seal.js makes the same boxes with libsodium.js, to the org public key.
"""
import base64

from nacl.exceptions import CryptoError as _NaclError
from nacl.public import PrivateKey, PublicKey, SealedBox

from . import CryptoError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def seal(public_key: bytes, plaintext: bytes) -> bytes:
    return SealedBox(PublicKey(public_key)).encrypt(plaintext)


def unseal(private_key: bytes, sealed: bytes) -> bytes:
    try:
        return SealedBox(PrivateKey(private_key)).decrypt(sealed)
    except _NaclError as exc:
        raise CryptoError("sealed box did not open (wrong key or tampered)") from exc
