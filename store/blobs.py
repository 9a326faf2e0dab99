"""Encrypted blob store for evidence files and other large ciphertext.

A blob is written once, streamed through libsodium's secretstream under a data key
the caller holds (a capture's key, wrapped to the org key). It is named by a keyed
hash of its plaintext and key, so names reveal nothing and a retried job that writes the
same bytes finds the blob already there instead of duplicating it. Writes go to a
temporary file and are renamed into place, so a killed worker leaves no half file.
"""
import hashlib
import io
import os
import tempfile
from pathlib import Path

from crypto import envelope


class BlobStore:
    def __init__(self, folder: Path, name_key: bytes):
        self.folder = Path(folder)
        self._name_key = name_key

    def name_for(self, data_key: bytes, plaintext: bytes) -> str:
        # The data key is part of the name: the same bytes in two captures are two blobs.
        material = hashlib.sha256(data_key).digest() + hashlib.sha256(plaintext).digest()
        return envelope.keyed_name(self._name_key, material)

    def path(self, name: str) -> Path:
        if not name or any(c not in "0123456789abcdef" for c in name):
            raise ValueError("bad blob name")
        return self.folder / name[:2] / name

    def put(self, data_key: bytes, plaintext: bytes) -> str:
        name = self.name_for(data_key, plaintext)
        target = self.path(name)
        if target.exists():
            return name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                envelope.encrypt_stream(data_key, io.BytesIO(plaintext), out, aad=name.encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name

    def get(self, data_key: bytes, name: str) -> bytes:
        out = io.BytesIO()
        with open(self.path(name), "rb") as src:
            envelope.decrypt_stream(data_key, src, out, aad=name.encode())
        return out.getvalue()

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


class DatabaseBlobStore(BlobStore):
    """The same blobs (same names, same ciphertext) in the database's `blobs` table, for machines
    that share nothing but the database. `put(..., session=s)` writes inside the caller's
    transaction, so a blob and the row that names it commit together or not at all."""

    def __init__(self, database_url: str, name_key: bytes):
        super().__init__(Path("/nonexistent"), name_key)
        self._url = database_url

    def path(self, name: str) -> Path:
        raise RuntimeError("blobs live in the database here, not in files")

    def _session(self, session):
        from contextlib import nullcontext

        from .db import session_scope
        return nullcontext(session) if session is not None else session_scope(self._url)

    def put(self, data_key: bytes, plaintext: bytes, session=None) -> str:
        from .models import BlobRow
        name = self.name_for(data_key, plaintext)
        out = io.BytesIO()
        envelope.encrypt_stream(data_key, io.BytesIO(plaintext), out, aad=name.encode())
        with self._session(session) as s:
            if s.get(BlobRow, name) is None:
                s.add(BlobRow(name=name, data=out.getvalue()))
                s.flush()
        return name

    def get(self, data_key: bytes, name: str) -> bytes:
        from .models import BlobRow
        with self._session(None) as s:
            row = s.get(BlobRow, name)
            if row is None:
                raise FileNotFoundError(f"no blob {name[:12]}… in the database")
            data = bytes(row.data)
        out = io.BytesIO()
        envelope.decrypt_stream(data_key, io.BytesIO(data), out, aad=name.encode())
        return out.getvalue()

    def exists(self, name: str) -> bool:
        from .models import BlobRow
        with self._session(None) as s:
            return s.get(BlobRow, name) is not None

    def delete(self, name: str, session=None) -> None:
        from sqlalchemy import delete

        from .models import BlobRow
        with self._session(session) as s:
            s.execute(delete(BlobRow).where(BlobRow.name == name))
