"""All of kesu's cryptography, small enough to read in one sitting.

No Flask, no database, nothing else of ours: SECURITY.md is this package's protocol
document. Every primitive comes from libsodium (PyNaCl) or argon2-cffi.
"""


class CryptoError(Exception):
    """A ciphertext failed to authenticate, or a key was wrong. Never ignore it."""
