// Seal bytes to the organisation's public key with libsodium's crypto_box_seal (X25519 +
// XSalsa20-Poly1305, an ephemeral sender key): only the holder of the org private key can
// open it; the intake server stores it as it came. Runs in a page, a Web Worker and Node.
import sodium from '../vendor/libsodium/libsodium-wrappers.mjs';

export async function seal(publicKeyB64, bytes) {
  await sodium.ready;
  const publicKey = sodium.from_base64(publicKeyB64, sodium.base64_variants.ORIGINAL);
  if (publicKey.length !== sodium.crypto_box_PUBLICKEYBYTES) throw new Error('seal: not an X25519 public key');
  if (!(bytes instanceof Uint8Array)) throw new TypeError('seal: bytes must be a Uint8Array');
  return sodium.crypto_box_seal(bytes, publicKey);
}

// Standard padded base64 (what the API expects).
export async function toBase64(bytes) {
  await sodium.ready;
  return sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
}
