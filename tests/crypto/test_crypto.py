"""crypto/: round trips, and every way a ciphertext can be wrong fails loudly."""
import io
import os

import pytest

from crypto import CryptoError, envelope, keys, passphrases, sealing, signing
from store.blobs import BlobStore
from store.keystore import KeyStore

FAST = dict(opslimit=keys.pwhash.argon2id.OPSLIMIT_MIN, memlimit=keys.pwhash.argon2id.MEMLIMIT_MIN)


def flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def test_envelope_round_trip_and_tampering():
    key = envelope.new_key()
    box = envelope.encrypt(key, b"pdq 0123", aad=b"case:1|item:p1|pdq")
    assert envelope.decrypt(key, box, aad=b"case:1|item:p1|pdq") == b"pdq 0123"
    for at in range(len(box)):
        with pytest.raises(CryptoError):
            envelope.decrypt(key, flip(box, at), aad=b"case:1|item:p1|pdq")
    with pytest.raises(CryptoError):
        envelope.decrypt(envelope.new_key(), box, aad=b"case:1|item:p1|pdq")
    # A ciphertext moved to another case does not open there (cross-case isolation).
    with pytest.raises(CryptoError):
        envelope.decrypt(key, box, aad=b"case:2|item:p1|pdq")


@pytest.mark.parametrize("size", [0, 1, envelope.CHUNK - 1, envelope.CHUNK, 3 * envelope.CHUNK + 5])
def test_stream_round_trip(size):
    key, data = envelope.new_key(), os.urandom(size)
    out = io.BytesIO()
    assert envelope.encrypt_stream(key, io.BytesIO(data), out, aad=b"blob") == size
    back = io.BytesIO()
    envelope.decrypt_stream(key, io.BytesIO(out.getvalue()), back, aad=b"blob")
    assert back.getvalue() == data


def test_stream_detects_tampering_truncation_and_extension():
    key, data = envelope.new_key(), os.urandom(2 * envelope.CHUNK + 100)
    out = io.BytesIO()
    envelope.encrypt_stream(key, io.BytesIO(data), out)
    ct = out.getvalue()
    cases = [flip(ct, 30), flip(ct, len(ct) // 2), flip(ct, len(ct) - 1),
             ct[:envelope.CHUNK + 60],                      # a whole chunk cut off
             ct[: len(ct) - 1],                             # last byte missing
             ct + b"x"]                                     # something appended
    for bad in cases:
        with pytest.raises(CryptoError):
            envelope.decrypt_stream(key, io.BytesIO(bad), io.BytesIO())
    with pytest.raises(CryptoError):
        envelope.decrypt_stream(envelope.new_key(), io.BytesIO(ct), io.BytesIO())


def test_sealed_box_opens_only_with_the_private_key():
    org, other = keys.generate(), keys.generate()
    sealed = sealing.seal(org.public_key, b'{"version":1}')
    assert sealing.unseal(org.private_key, sealed) == b'{"version":1}'
    with pytest.raises(CryptoError):
        sealing.unseal(other.private_key, sealed)
    with pytest.raises(CryptoError):
        sealing.unseal(org.private_key, flip(sealed, 40))


def test_org_keys_wrapped_under_passphrase():
    org = keys.generate()
    stored = keys.wrap(org, "correct horse battery", **FAST)
    assert "private" not in str(stored) and sealing.b64(org.private_key) not in str(stored)
    assert keys.unwrap(stored, "correct horse battery") == org
    with pytest.raises(keys.WrongPassphrase):
        keys.unwrap(stored, "wrong horse battery")
    tampered = dict(stored, wrapped=sealing.b64(flip(sealing.unb64(stored["wrapped"]), 50)))
    with pytest.raises(keys.WrongPassphrase):
        keys.unwrap(tampered, "correct horse battery")
    changed = keys.rewrap(stored, "correct horse battery", "a new passphrase here")
    assert keys.unwrap(changed, "a new passphrase here") == org
    with pytest.raises(keys.WrongPassphrase):
        keys.unwrap(changed, "correct horse battery")


def test_signatures():
    org = keys.generate()
    manifest = {"url": "https://example.org/a", "sha256": "00" * 32, "名前": "証拠"}
    sig = signing.sign(org.signing_key, manifest)
    signing.verify(org.verify_key, manifest, sig)
    with pytest.raises(CryptoError):
        signing.verify(org.verify_key, dict(manifest, url="https://example.org/b"), sig)
    with pytest.raises(CryptoError):
        signing.verify(keys.generate().verify_key, manifest, sig)


def test_passphrases_have_80_bits_and_normalise():
    import math
    p = passphrases.generate()
    words = p.split("-")
    assert len(words) * math.log2(len(set(passphrases.words("en")))) >= 88
    assert all(w.isascii() and w.isalpha() for w in words)
    assert len({passphrases.generate() for _ in range(50)}) == 50
    # Full-width letters and Japanese separators from a phone keyboard fold to the same text.
    fullwidth = "　".join(w.upper().translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}) for w in words)
    assert passphrases.normalize(fullwidth) == p
    assert passphrases.normalize(" " + p.replace("-", " ") + " ") == p


def test_peppered_hashes():
    pepper = os.urandom(32)
    stored = passphrases.hash_secret(pepper, "apple-banana")
    assert stored.startswith("$argon2id$")
    assert passphrases.verify_secret(pepper, stored, "apple-banana")
    assert not passphrases.verify_secret(pepper, stored, "apple-bananas")
    assert not passphrases.verify_secret(os.urandom(32), stored, "apple-banana")   # the pepper matters
    assert not passphrases.verify_secret(pepper, None, "apple-banana")


def test_destroying_a_case_key_makes_its_data_unreadable(tmp_path):
    org = keys.generate()
    store = KeyStore(tmp_path / "keystore", os.urandom(32))
    k1, k2 = store.create(1, org.public_key), store.create(2, org.public_key)
    box1 = envelope.encrypt(k1, b"descriptor of case 1", aad=b"case:1")
    box2 = envelope.encrypt(k2, b"descriptor of case 2", aad=b"case:2")
    assert store.get(1, org.private_key) == k1
    assert not any("1" == p.stem for p in (tmp_path / "keystore").iterdir())   # names reveal nothing
    backup = {p.name: p.read_bytes() for p in (tmp_path / "keystore").iterdir()}
    assert store.destroy(1)
    assert store.get(1, org.private_key) is None
    assert envelope.decrypt(store.get(2, org.private_key), box2, aad=b"case:2") == b"descriptor of case 2"
    with pytest.raises(CryptoError):   # case 2's key does not open case 1's data
        envelope.decrypt(k2, box1, aad=b"case:1")
    assert len(backup) == 2 and len(list((tmp_path / "keystore").iterdir())) == 1


def test_a_case_key_is_written_once_even_by_take_ins_at_the_same_time(tmp_path):
    # Two workers taking in submissions of one case at once must end with one key: a second
    # key overwriting the first would leave what was encrypted under the first unreadable.
    from concurrent.futures import ThreadPoolExecutor
    org = keys.generate()
    store = KeyStore(tmp_path / "keystore", os.urandom(32))
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: store.get_or_create(7, org.public_key, org.private_key), range(32)))
    assert len(set(got)) == 1 and store.get(7, org.private_key) == got[0]
    with pytest.raises(FileExistsError):
        store.create(7, org.public_key)
    assert store.get(7, org.private_key) == got[0]
    assert [p.suffix for p in (tmp_path / "keystore").iterdir()] == [".key"]     # no temporary left


def test_blob_store_is_write_once_and_detects_changes(tmp_path):
    blobs = BlobStore(tmp_path / "blobs", os.urandom(32))
    key = envelope.new_key()
    data = os.urandom(200_000)
    name = blobs.put(key, data)
    assert blobs.put(key, data) == name                         # a retried write is the same blob
    assert len([p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]) == 1
    assert blobs.get(key, name) == data
    assert data[:64] not in blobs.path(name).read_bytes()
    other = blobs.put(envelope.new_key(), data)                  # same bytes, another capture's key
    assert other != name
    raw = blobs.path(name).read_bytes()
    blobs.path(name).write_bytes(flip(raw, len(raw) // 2))
    with pytest.raises(CryptoError):
        blobs.get(key, name)
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))
