"""One kesu instance: settings, database, key store, blob store, server secrets, org keys.

Both apps, the workers and the command line reach the data through this object.
"""
import hashlib
import json
import logging
import os
import secrets as _random
from contextlib import contextmanager
from functools import cached_property

from sqlalchemy import select

from crypto import CryptoError
from crypto import keys as orgkeys
from crypto.sealing import seal, unseal

from . import db
from .blobs import BlobStore, DatabaseBlobStore
from .config import Settings, load
from .keystore import KeyStore
from .models import InstanceMark, OrgKey

log = logging.getLogger("kesu.instance")

# Columns holding sealed boxes to the org key (besides the key store's files), which
# `rotate_key` re-seals to the new key: (table, primary key, column, layout). Layout "box":
# the value is one sealed box; "len16": a 2-byte big-endian length, a sealed box of that
# length, then data under the key in the box (workers.takedown.notify's archive; a value that
# starts with two zero bytes is sealed to a case instead, store.casekeys). Modules that seal
# more to the org key add theirs here.
SEALED_COLUMNS: list[tuple[str, str, str, str]] = [
    ("captures", "id", "data_key", "box"),
    ("media", "id", "signals", "box"),
    ("notices", "id", "archived", "len16"),
]
RESEAL_BATCH = 1000


class _OrgKeyStore(KeyStore):
    """The key store as the instance sees it: with several org keys (after a rotation), a case
    key sealed to any unlocked one opens, and new case keys are sealed to the active one."""

    def __init__(self, instance, folder, name_key):
        super().__init__(folder, name_key)
        self._instance = instance

    def get(self, case_id: int, private_key: bytes) -> bytes | None:
        path = self._path(case_id)
        if not path.exists():
            return None
        sealed = path.read_bytes()
        others = [k.private_key for k in self._instance._all.values() if k.private_key != private_key]  # noqa: SLF001 (same module)
        for key in [private_key, *others]:
            try:
                return unseal(key, sealed)
            except CryptoError:
                continue
        raise CryptoError("the case key did not open with any org key")

    def create(self, case_id: int, public_key: bytes) -> bytes:
        # The active key this process unlocked (never an older one a submission came with),
        # so this process can always read back what it wrote.
        active = self._instance._keys  # noqa: SLF001 (same module)
        if active is not None:
            public_key = active.public_key
        return super().create(case_id, public_key)


class NotInitialised(RuntimeError):
    pass


class FolderMismatch(RuntimeError):
    """This machine's instance folder is not the one the database was made with."""


SECRETS = ("pepper", "names", "session", "totp")
KEYSTORE_ID = "keystore.id"        # in the key store folder: which key store this is


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(b"kesu instance mark\0" + data).hexdigest()


class Instance:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or load()
        self._keys: orgkeys.OrgKeys | None = None
        self._all: dict[str, orgkeys.OrgKeys] = {}      # every unlocked bundle (old keys after rotation)

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
        return _OrgKeyStore(self, self.settings.keystore_dir, self.settings.secret("names"))

    @cached_property
    def blobs(self) -> BlobStore:
        if self.settings.blobs_in_database:
            return DatabaseBlobStore(self.settings.database_url, self.settings.secret("names"))
        return BlobStore(self.settings.blob_dir, self.settings.secret("names"))

    # --- what lives beside the database ------------------------------------------
    def _keystore_id(self, create: bool = False) -> bytes | None:
        path = self.settings.keystore_dir / KEYSTORE_ID
        if not path.exists() and create:
            self.settings.keystore_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_random.token_bytes(32))
        return path.read_bytes() if path.exists() else None

    def _folder_items(self, keystore: bool) -> dict[str, tuple]:
        """name -> (path, bytes or None) of what this machine's folder holds."""
        items = {}
        for name in SECRETS:
            path = self.settings.secrets_dir / name
            items[f"secret:{name}"] = (path, path.read_bytes() if path.exists() else None)
        if keystore:
            path = self.settings.keystore_dir / KEYSTORE_ID
            items["keystore"] = (path, self._keystore_id())
        return items

    def mark(self) -> None:
        """Record the fingerprints of this folder's secrets and key store (first machine only:
        a fingerprint already recorded is never replaced)."""
        with self.session() as s:
            have = set(s.execute(select(InstanceMark.name)).scalars())
            for name, (_path, data) in self._folder_items(keystore=True).items():
                if name not in have and data is not None:
                    s.add(InstanceMark(name=name, fingerprint=fingerprint(data)))

    def check_folder(self, keystore: bool = True) -> None:
        """Refuse, naming each item, when this machine's instance folder lacks or differs from
        what the database was made with (a second machine joining must be given copies, or the
        shared key store, and never makes its own). A database from before the marks existed
        records this folder's now."""
        with self.session() as s:
            marks = dict(s.execute(select(InstanceMark.name, InstanceMark.fingerprint)).all())
        if not marks:
            self.mark()
            return
        problems = []
        for name, (path, data) in self._folder_items(keystore).items():
            want = marks.get(name)
            if want is None:
                continue
            if data is None:
                problems.append(f"{path} is missing")
            elif fingerprint(data) != want:
                problems.append(f"{path} is not the one this database was made with")
        if problems:
            raise FolderMismatch(
                "this machine's instance folder does not belong to the database "
                f"{self.settings.database_url.split('@')[-1]}: " + "; ".join(problems) +
                ". Copy the secrets folder from the first machine (and give workers that open cases the "
                "shared key store, KESU_KEYSTORE); kesu never makes new ones for an existing database.")

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
                key_id = existing.key_id
        if existing:
            self.check_folder(keystore=True)                  # joining: never make new secrets here
            return key_id
        with self.session() as s:
            generated = orgkeys.generate()
            bundle = orgkeys.wrap(generated, passphrase, *orgkeys.KDF_PROFILES[self.settings.key_kdf])
            s.add(OrgKey(key_id=generated.key_id, bundle=bundle, active=True))
        for name in SECRETS:
            self.settings.secret(name)
        self._keystore_id(create=True)
        self.mark()
        self._keys = generated
        self._all = {generated.key_id: generated}
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
        """Open the active bundle (a wrong passphrase raises) and every older one with it."""
        active = self.active_key()
        keys = orgkeys.unwrap(active.bundle, passphrase)
        unlocked = {keys.key_id: keys}
        with self.session() as s:
            older = s.execute(select(OrgKey).where(OrgKey.key_id != active.key_id)).scalars().all()
        for row in older:
            try:
                unlocked[row.key_id] = orgkeys.unwrap(row.bundle, passphrase)
            except CryptoError:
                log.warning("org key %s does not open with this passphrase", row.key_id)
        self._keys, self._all = keys, unlocked
        return self._keys

    def private_keys(self, key_id: str | None = None) -> orgkeys.OrgKeys:
        """The unlocked org keys (for key_id when given); raises when locked."""
        if self._keys is None:
            raise orgkeys.WrongPassphrase("the org key is locked: start with the key passphrase")
        if key_id and key_id != self._keys.key_id:
            if key_id in self._all:
                return self._all[key_id]
            with self.session() as s:
                row = s.get(OrgKey, key_id)
            if row is None:
                raise KeyError(key_id)
            raise orgkeys.WrongPassphrase(f"key {key_id} is not unlocked")
        return self._keys

    @property
    def unlocked(self) -> bool:
        return self._keys is not None

    # --- key operations (kesu key passphrase / kesu key rotate) -------------------------
    def change_passphrase(self, old: str, new: str) -> list[str]:
        """Re-wrap every org key bundle under a new passphrase; no data is re-encrypted."""
        if not new:
            raise orgkeys.WrongPassphrase("the new key passphrase is empty")
        with self.session() as s:
            rows = s.execute(select(OrgKey)).scalars().all()
            if not rows:
                raise NotInitialised("this instance has no keys yet: run `kesu init`")
            rewrapped = {row.key_id: orgkeys.rewrap(row.bundle, old, new) for row in rows}   # all or none
            for row in rows:
                row.bundle = rewrapped[row.key_id]
        return sorted(rewrapped)

    def rotate_key(self, passphrase: str) -> tuple[str, str, dict]:
        """A new active org key; old ones stay (inactive) to open submissions sealed to them.

        Everything the instance sealed to an old org key (case keys in the key store, the
        columns in SEALED_COLUMNS) is re-sealed to the new one. Returns (old id, new id, counts).
        """
        old = self.unlock(passphrase)
        fresh = orgkeys.generate()
        bundle = orgkeys.wrap(fresh, passphrase, *orgkeys.KDF_PROFILES[self.settings.key_kdf])
        with self.session() as s:
            for row in s.execute(select(OrgKey).where(OrgKey.active)).scalars():
                row.active = False
            s.flush()
            s.add(OrgKey(key_id=fresh.key_id, bundle=bundle, active=True))
        self._keys = fresh
        self._all[fresh.key_id] = fresh
        return old.key_id, fresh.key_id, self.reseal()

    def _resealed(self, sealed: bytes) -> bytes | None:
        """`sealed` re-sealed to the active key; None when it already is (or opens with no key)."""
        try:
            unseal(self._keys.private_key, sealed)
            return None
        except CryptoError:
            pass
        for keys in self._all.values():
            try:
                return seal(self._keys.public_key, unseal(keys.private_key, sealed))
            except CryptoError:
                continue
        raise CryptoError("sealed to no known org key")

    def reseal(self) -> dict:
        """Re-seal to the active org key whatever is still sealed to an older one (idempotent)."""
        from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, inspect
        self.private_keys()
        counts = {"resealed": 0, "unreadable": 0}

        def one(sealed):
            try:
                out = self._resealed(sealed)
            except CryptoError:
                counts["unreadable"] += 1
                return None
            if out is not None:
                counts["resealed"] += 1
            return out

        folder = self.settings.keystore_dir
        for path in sorted(folder.glob("*.key")) if folder.exists() else []:
            out = one(path.read_bytes())
            if out is not None:
                tmp = path.with_suffix(".tmp")
                with open(tmp, "wb") as fh:
                    fh.write(out)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
        with self.session() as s:
            present = set(inspect(s.connection()).get_table_names())
        for table_name, pk, column, layout in SEALED_COLUMNS:
            if table_name not in present:
                continue
            table = Table(table_name, MetaData(), Column(pk, Integer, primary_key=True), Column(column, LargeBinary))
            last = None
            while True:         # in batches, one transaction each: a big media table never sits in memory
                with self.session() as s:
                    query = select(table.c[pk], table.c[column]).where(table.c[column].is_not(None))
                    if last is not None:
                        query = query.where(table.c[pk] > last)
                    rows = s.execute(query.order_by(table.c[pk]).limit(RESEAL_BATCH)).all()
                    for ident, value in rows:
                        value = bytes(value)
                        if layout == "len16":
                            size = int.from_bytes(value[:2], "big")
                            if size == 0:           # sealed to a case (store.casekeys.CASE_SEALED)
                                continue
                            box = one(value[2:2 + size])
                            out = None if box is None else value[:2] + box + value[2 + size:]
                        else:
                            out = one(value)
                        if out is not None:
                            s.execute(table.update().where(table.c[pk] == ident).values({column: out}))
                if len(rows) < RESEAL_BATCH:
                    break
                last = rows[-1][0]
        return counts


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
