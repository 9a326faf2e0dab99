// SHA-256 and MD5 of a File or Blob, streamed in slices so a 1 GB video never sits in
// memory. Runs in a page or a Web Worker. hash-wasm is served from our own origin.
import { createMD5, createSHA256 } from '../vendor/hash-wasm/hash-wasm.mjs';

export const SLICE = 4 * 1024 * 1024;

export async function hashFile(blob, onProgress = () => {}) {
  const [sha, md5] = await Promise.all([createSHA256(), createMD5()]);
  sha.init();
  md5.init();
  for (let offset = 0; offset < blob.size; offset += SLICE) {
    const chunk = new Uint8Array(await blob.slice(offset, offset + SLICE).arrayBuffer());
    sha.update(chunk);
    md5.update(chunk);
    onProgress(Math.min(1, (offset + chunk.length) / blob.size));
  }
  onProgress(1);
  return { sha256: sha.digest('hex'), md5: md5.digest('hex') };
}
