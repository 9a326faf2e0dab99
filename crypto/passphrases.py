"""Victim passphrases and staff passwords: generation, normalisation, Argon2id + pepper.

A victim's passphrase is in the language of the page she registered on: BIP-39 words
(hiragana for Japanese), without the words listed in wordlists/filter-<language>.txt, and
as many of them as it takes to hold at least 88 bits. Typing is forgiving: NFKC (full-width
and half-width input), katakana folded to hiragana, lower case, any separator.

The pepper (a server secret outside the database) is mixed in with HMAC before
Argon2id, so a stolen database alone cannot be brute-forced offline.
"""
import hashlib
import hmac
import math
import re
import secrets
import unicodedata
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from mnemonic import Mnemonic

LANGUAGES = {"ja": "japanese", "en": "english"}   # page language -> BIP-39 list
MIN_BITS = 88
FILTERS = Path(__file__).with_name("wordlists")
_SEPARATORS = re.compile(r"[\s\-_.,・、。/]+")
_KATAKANA = re.compile(r"[\u30a1-\u30f6]")

_hasher = PasswordHasher()  # argon2id, argon2-cffi's RFC 9106 low-memory profile


def filtered_words(language: str) -> frozenset[str]:
    """The words kept out of passphrases in this language (its filter file)."""
    path = FILTERS / f"filter-{language}.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return frozenset(normalize(line) for line in lines if line.strip() and not line.startswith("#"))


@cache
def words(language: str = "en") -> tuple[str, ...]:
    """The BIP-39 list of the language (English when unknown), filtered, in NFKC."""
    language = language if language in LANGUAGES else "en"
    unwanted = filtered_words(language)
    listed = (unicodedata.normalize("NFKC", w) for w in Mnemonic(LANGUAGES[language]).wordlist)
    return tuple(w for w in listed if w not in unwanted)


def word_count(language: str = "en") -> int:
    """Enough words for MIN_BITS from the filtered list (9 where the filter removed any)."""
    return math.ceil(MIN_BITS / math.log2(len(words(language))))


def generate(language: str = "en") -> str:
    """A new passphrase, already in the normalised form that `normalize` gives back."""
    chosen = words(language)
    return "-".join(secrets.choice(chosen) for _ in range(word_count(language)))


def normalize(text: str) -> str:
    """NFKC (full-width or half-width input), katakana as hiragana, lower case, separators folded.

    The browser (status.js normalizePassphrase) folds the same way before sending."""
    text = unicodedata.normalize("NFKC", text or "").strip().lower()
    text = _KATAKANA.sub(lambda m: chr(ord(m.group()) - 0x60), text)
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


_DUMMY = _hasher.hash(secrets.token_hex(16))
