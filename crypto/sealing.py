"""Sealed boxes (X25519, libsodium crypto_box_seal): what browsers send us.

The browser's seal.js makes the same boxes with libsodium.js, to the org public key.
"""
import base64
import hashlib

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


def derive_keypair(secret: bytes, context: bytes) -> tuple[bytes, bytes]:
    """(public, private) X25519 keys derived from a 32-byte secret (BLAKE2b keyed by it).

    A case key gives its case a seal key: anyone may seal to the public half (a crawler
    holds no private key), only whoever holds the case key opens, and destroying the case
    key destroys the private half with it."""
    seed = hashlib.blake2b(context, key=secret, digest_size=32, person=b"kesu-keypair-v1").digest()
    private = PrivateKey(seed)
    return bytes(private.public_key), bytes(private)
