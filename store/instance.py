"""One kesu instance: settings, database, key store, blob store, server secrets, org keys.

Both apps, the workers and the command line reach the data through this object.
"""
import json
from contextlib import contextmanager
from functools import cached_property

from sqlalchemy import select

from crypto import keys as orgkeys

from . import db
from .blobs import BlobStore
from .config import Settings, load
from .keystore import KeyStore
from .models import OrgKey


class NotInitialised(RuntimeError):
    pass


class Instance:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or load()
        self._keys: orgkeys.OrgKeys | None = None

    # --- storage -------------------------------------------------------------
    @contextmanager
    def session(self):
        with db.session_scope(self.settings.database_url) as s:
            yield s

    @cached_property
    def pepper(self) -> bytes:
        """HMAC key for passphrases and case numbers (outside the database)."""
        return self.settings.secret("pepper")

    @cached_property
    def keystore(self) -> KeyStore:
        return KeyStore(self.settings.keystore_dir, self.settings.secret("names"))

    @cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(self.settings.blob_dir, self.settings.secret("names"))

    # --- org keys ------------------------------------------------------------
    def initialised(self) -> bool:
        try:
            with self.session() as s:
                return s.execute(select(OrgKey).limit(1)).first() is not None
        except Exception:
            return False

    def init(self, passphrase: str) -> str:
        """Create or upgrade the schema and, the first time, the org keys. Idempotent."""
        for folder in (self.settings.instance, self.settings.log_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        db.upgrade(self.settings.database_url)
        with self.session() as s:
            existing = s.execute(select(OrgKey).where(OrgKey.active)).scalars().first()
            if existing:
                orgkeys.unwrap(existing.bundle, passphrase)   # a wrong passphrase fails loudly
                return existing.key_id
            generated = orgkeys.generate()
            bundle = orgkeys.wrap(generated, passphrase, *orgkeys.KDF_PROFILES[self.settings.key_kdf])
            s.add(OrgKey(key_id=generated.key_id, bundle=bundle, active=True))
        for name in ("pepper", "names", "session", "totp"):
            self.settings.secret(name)
        self._keys = generated
        return generated.key_id

    def active_key(self) -> OrgKey:
        with self.session() as s:
            row = s.execute(select(OrgKey).where(OrgKey.active)).scalars().first()
        if row is None:
            raise NotInitialised("this instance has no keys yet: run `kesu init`")
        return row

    def public_key(self) -> tuple[str, str]:
        """(key_id, base64 public key) that browsers seal to."""
        row = self.active_key()
        return row.key_id, row.bundle["public_key"]

    def unlock(self, passphrase: str) -> orgkeys.OrgKeys:
        self._keys = orgkeys.unwrap(self.active_key().bundle, passphrase)
        return self._keys

    def private_keys(self, key_id: str | None = None) -> orgkeys.OrgKeys:
        """The unlocked org keys (for key_id when given); raises when locked."""
        if self._keys is None:
            raise orgkeys.WrongPassphrase("the org key is locked: start with the key passphrase")
        if key_id and key_id != self._keys.key_id:
            with self.session() as s:
                row = s.get(OrgKey, key_id)
            if row is None:
                raise KeyError(key_id)
            raise orgkeys.WrongPassphrase(f"key {key_id} is not unlocked")
        return self._keys

    @property
    def unlocked(self) -> bool:
        return self._keys is not None

    def describe(self) -> dict:
        return {"instance": str(self.settings.instance), "database": self.settings.database_url.split("@")[-1]}


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
