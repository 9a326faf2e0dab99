"""Case keys, in their own folder apart from the database (crypto-shredding).

Each case key is a random 32-byte key stored sealed to the org public key, in a file
named by a keyed hash of the case id. Destroying the file makes the case's signals
unreadable everywhere, database backups included. Writing needs only the public key;
reading needs the unlocked org private key.
"""
import os
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
        """A new key for the case, written once (an existing key is returned instead)."""
        path = self._path(case_id)
        if path.exists():
            raise FileExistsError(f"case {case_id} already has a key")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = envelope.new_key()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(seal(public_key, key))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
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
