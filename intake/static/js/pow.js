// Proof of work for throttled requests (DESIGN.md §6.3). When the server is being guessed at,
// it answers 429 with a challenge instead of making her wait: the page solves it (a few
// seconds of hashing) and sends the request again with the solution, which the server always
// admits. The challenge is `count` small puzzles rather than one big one, so the time to
// solve is steady (a single puzzle's time varies wildly). Runs in a page and in Node.
import { createSHA256 } from '../vendor/hash-wasm/hash-wasm.mjs';

export const WORK_HEADER = 'X-Kesu-Work';

function leadingZeroBits(bytes) {
  let bits = 0;
  for (const b of bytes) {
    if (b === 0) { bits += 8; continue; }
    return bits + Math.clz32(b) - 24;
  }
  return bits;
}

// The nonces for a challenge {challenge, bits, count}: for each i, SHA-256 of
// `${challenge}.${i}.${nonce}` starts with `bits` zero bits. Yields to the page between puzzles.
export async function solve({ challenge, bits, count }) {
  const sha = await createSHA256();
  const nonces = [];
  for (let i = 0; i < count; i++) {
    const prefix = `${challenge}.${i}.`;
    let nonce = 0;
    for (;;) {
      sha.init();
      sha.update(prefix + nonce);
      if (leadingZeroBits(sha.digest('binary')) >= bits) break;
      nonce++;
    }
    nonces.push(nonce);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  return `${challenge}:${nonces.join(',')}`;
}

// fetch(), solving the server's challenge when it sends one (at most `tries` times).
// `onWork(true|false)` lets the page say that it is working.
export async function fetchWithWork(url, init = {}, { onWork = () => {}, tries = 3 } = {}) {
  let response = await fetch(url, init);
  for (let n = 0; n < tries && response.status === 429; n++) {
    let challenge = null;
    try { challenge = (await response.clone().json()).work || null; } catch { challenge = null; }
    if (!challenge) break;
    onWork(true);
    let solution;
    try { solution = await solve(challenge); } finally { onWork(false); }
    const headers = new Headers(init.headers || {});
    headers.set(WORK_HEADER, solution);
    response = await fetch(url, { ...init, headers });
  }
  return response;
}
