"""Victim passphrases and staff passwords: generation, normalisation, Argon2id + pepper.

The pepper (a server secret outside the database) is mixed in with HMAC before
Argon2id, so a stolen database alone cannot be brute-forced offline.
"""
import hashlib
import hmac
import re
import secrets
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from mnemonic import Mnemonic

WORDS = Mnemonic("english").wordlist  # 2048 short lowercase ASCII words (BIP-39)
WORD_COUNT = 8                         # 8 x 11 bits = 88 bits >= 80
_SEPARATORS = re.compile(r"[\s\-_.,・、。/]+")

_hasher = PasswordHasher()  # argon2id, argon2-cffi's RFC 9106 low-memory profile


def generate() -> str:
    return "-".join(secrets.choice(WORDS) for _ in range(WORD_COUNT))


def normalize(text: str) -> str:
    """NFKC (full-width input from a Japanese keyboard), lower case, separators folded."""
    text = unicodedata.normalize("NFKC", text or "").strip().lower()
    return "-".join(w for w in _SEPARATORS.split(text) if w)


def _peppered(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_secret(pepper: bytes, secret: str) -> str:
    return _hasher.hash(_peppered(pepper, secret))


def verify_secret(pepper: bytes, stored: str | None, secret: str) -> bool:
    """Constant work whether or not `stored` exists: an unknown account still pays one check."""
    target = stored or _DUMMY
    try:
        ok = _hasher.verify(target, _peppered(pepper, secret))
    except (VerificationError, InvalidHashError):
        ok = False
    return ok and stored is not None


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


_DUMMY = _hasher.hash(secrets.token_hex(16))
