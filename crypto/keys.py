"""The organisation's keys, kept only wrapped under the admin passphrase.

One "key bundle" holds the X25519 intake key (browsers seal to its public half) and
the Ed25519 signing key (evidence manifests). Its private halves are stored only in a
SecretBox-style envelope under Argon2id(passphrase); unlocking them needs the
passphrase, which is never written to disk.
"""
import hashlib
import json
from dataclasses import dataclass

from nacl import pwhash
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from nacl.utils import random

from . import CryptoError, envelope
from .sealing import b64, unb64

# MODERATE: 256 MiB and about a second, paid once per unlock.
OPSLIMIT = pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT = pwhash.argon2id.MEMLIMIT_MODERATE
KDF_PROFILES = {
    "moderate": (OPSLIMIT, MEMLIMIT),
    "interactive": (pwhash.argon2id.OPSLIMIT_INTERACTIVE, pwhash.argon2id.MEMLIMIT_INTERACTIVE),
}


class WrongPassphrase(CryptoError):
    pass


@dataclass(frozen=True)
class OrgKeys:
    key_id: str
    public_key: bytes          # X25519, served to browsers
    private_key: bytes         # X25519, opens sealed submissions
    signing_key: bytes         # Ed25519 seed
    verify_key: bytes          # Ed25519 public half, printed in every export


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def _kek(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    if not passphrase:
        raise WrongPassphrase("the key passphrase is empty")
    return pwhash.argon2id.kdf(envelope.KEY_BYTES, passphrase.encode("utf-8"), salt,
                               opslimit=opslimit, memlimit=memlimit)


def generate() -> OrgKeys:
    x = PrivateKey.generate()
    s = SigningKey.generate()
    pub = bytes(x.public_key)
    return OrgKeys(key_id_of(pub), pub, bytes(x), bytes(s), bytes(s.verify_key))


def wrap(keys: OrgKeys, passphrase: str, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT) -> dict:
    """The storable form: public halves in the clear, private halves wrapped."""
    salt = random(pwhash.argon2id.SALTBYTES)
    secret = json.dumps({"x25519": b64(keys.private_key), "ed25519": b64(keys.signing_key)}).encode()
    kek = _kek(passphrase, salt, opslimit, memlimit)
    return {
        "version": 1,
        "key_id": keys.key_id,
        "public_key": b64(keys.public_key),
        "verify_key": b64(keys.verify_key),
        "kdf": {"alg": "argon2id13", "salt": b64(salt), "opslimit": opslimit, "memlimit": memlimit},
        "wrapped": b64(envelope.encrypt(kek, secret, aad=keys.key_id.encode())),
    }


def unwrap(stored: dict, passphrase: str) -> OrgKeys:
    kdf = stored["kdf"]
    kek = _kek(passphrase, unb64(kdf["salt"]), kdf["opslimit"], kdf["memlimit"])
    try:
        secret = json.loads(envelope.decrypt(kek, unb64(stored["wrapped"]), aad=stored["key_id"].encode()))
    except CryptoError as exc:
        raise WrongPassphrase("wrong key passphrase") from exc
    # Public halves are derived from the private ones, never taken from the clear fields:
    # a bundle whose clear verify key was swapped would otherwise sign under one key and
    # print another in every export.
    seed = unb64(secret["ed25519"])
    keys = OrgKeys(stored["key_id"], unb64(stored["public_key"]), unb64(secret["x25519"]),
                   seed, bytes(SigningKey(seed).verify_key))
    if bytes(PrivateKey(keys.private_key).public_key) != keys.public_key \
            or unb64(stored["verify_key"]) != keys.verify_key:
        raise CryptoError("the stored key bundle is inconsistent")
    return keys


def rewrap(stored: dict, old: str, new: str) -> dict:
    """Change the admin passphrase without touching any data key."""
    return wrap(unwrap(stored, old), new, stored["kdf"]["opslimit"], stored["kdf"]["memlimit"])
