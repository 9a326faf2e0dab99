"""Case keys, in their own folder apart from the database (crypto-shredding).

Each case key is a random 32-byte key stored sealed to the org public key, in a file
named by a keyed hash of the case id. Destroying the file makes the case's signals
unreadable everywhere, database backups included. Writing needs only the public key;
reading needs the unlocked org private key.
"""
import os
import tempfile
from pathlib import Path

from crypto import envelope
from crypto.sealing import seal, unseal


class KeyStore:
    def __init__(self, folder: Path, name_key: bytes):
        self.folder = Path(folder)
        self._name_key = name_key

    def _path(self, case_id: int) -> Path:
        return self.folder / (envelope.keyed_name(self._name_key, f"case:{case_id}".encode()) + ".key")

    def create(self, case_id: int, public_key: bytes) -> bytes:
        """A new key for the case, written once: FileExistsError when the case has one (also
        when another process wrote it a moment ago: the link below is the atomic test)."""
        path = self._path(case_id)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = envelope.new_key()
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(seal(public_key, key))
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)             # fails if the key exists: never overwrites one
        finally:
            os.unlink(tmp)
        return key

    def get_or_create(self, case_id: int, public_key: bytes, private_key: bytes) -> bytes:
        """The case's key, made now if it has none (two take-ins at once get the same one)."""
        key = self.get(case_id, private_key)
        if key is None:
            try:
                key = self.create(case_id, public_key)
            except FileExistsError:
                key = self.get(case_id, private_key)
        return key

    def get(self, case_id: int, private_key: bytes) -> bytes | None:
        path = self._path(case_id)
        if not path.exists():
            return None
        return unseal(private_key, path.read_bytes())

    def exists(self, case_id: int) -> bool:
        return self._path(case_id).exists()

    def destroy(self, case_id: int) -> bool:
        """Overwrite then unlink: after this, the case's ciphertexts are noise."""
        path = self._path(case_id)
        if not path.exists():
            return False
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(os.urandom(size))
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
        return True
