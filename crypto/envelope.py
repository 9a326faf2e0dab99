"""Symmetric envelopes: random data keys, authenticated encryption, streams, keyed names.

Small records use XChaCha20-Poly1305 with associated data, so a ciphertext moved to
another row or case fails to open. Large files use libsodium's secretstream, chunk by
chunk, so a 1 GB evidence file never sits in memory and a truncated file is detected.
"""
import hashlib
import hmac

from nacl import bindings as b
from nacl.exceptions import CryptoError as _NaclError
from nacl.utils import random

from . import CryptoError

KEY_BYTES = b.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
_NONCE = b.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_VERSION = b"\x01"
CHUNK = 64 * 1024


def new_key() -> bytes:
    return random(KEY_BYTES)


def encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    nonce = random(_NONCE)
    return _VERSION + nonce + b.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def decrypt(key: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
    if len(ciphertext) < 1 + _NONCE or ciphertext[:1] != _VERSION:
        raise CryptoError("not a kesu envelope")
    nonce, body = ciphertext[1:1 + _NONCE], ciphertext[1 + _NONCE:]
    try:
        return b.crypto_aead_xchacha20poly1305_ietf_decrypt(body, aad, nonce, key)
    except _NaclError as exc:
        raise CryptoError("envelope failed to authenticate (wrong key, wrong context or tampered)") from exc


def keyed_name(key: bytes, data: bytes) -> str:
    """HMAC-SHA-256 as hex: names files and case numbers without revealing them."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def encrypt_stream(key: bytes, src, dst, aad: bytes = b"") -> int:
    """Encrypt file-like src into dst chunk by chunk; returns plaintext bytes written."""
    state = b.crypto_secretstream_xchacha20poly1305_state()
    header = b.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    dst.write(_VERSION + header)
    total = 0
    chunk = src.read(CHUNK)
    while True:
        following = src.read(CHUNK) if chunk else b""
        tag = (b.crypto_secretstream_xchacha20poly1305_TAG_FINAL if not following
               else b.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
        dst.write(b.crypto_secretstream_xchacha20poly1305_push(state, chunk, aad if total == 0 else None, tag))
        total += len(chunk)
        if not following:
            return total
        chunk = following


def decrypt_stream(key: bytes, src, dst, aad: bytes = b"") -> int:
    """Decrypt what encrypt_stream wrote; raises CryptoError on tampering or truncation."""
    head = src.read(1 + b.crypto_secretstream_xchacha20poly1305_HEADERBYTES)
    if len(head) != 1 + b.crypto_secretstream_xchacha20poly1305_HEADERBYTES or head[:1] != _VERSION:
        raise CryptoError("not a kesu stream")
    state = b.crypto_secretstream_xchacha20poly1305_state()
    b.crypto_secretstream_xchacha20poly1305_init_pull(state, head[1:], key)
    total, first = 0, True
    size = CHUNK + b.crypto_secretstream_xchacha20poly1305_ABYTES
    while True:
        block = src.read(size)
        if not block:
            raise CryptoError("stream truncated")
        try:
            plain, tag = b.crypto_secretstream_xchacha20poly1305_pull(state, block, aad if first else None)
        except _NaclError as exc:
            raise CryptoError("stream failed to authenticate (wrong key or tampered)") from exc
        first = False
        dst.write(plain)
        total += len(plain)
        if tag == b.crypto_secretstream_xchacha20poly1305_TAG_FINAL:
            if src.read(1):
                raise CryptoError("data after the end of the stream")
            return total
