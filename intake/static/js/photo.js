// A photo the victim chose, turned into signals on her device: decode (never upload), then
// SHA-256, MD5 and the PDQ variants. Runs in a page or a Web Worker (createImageBitmap and
// OffscreenCanvas, no DOM). The server decodes crawled media by the same rules in
// workers/images.py: no colour-profile conversion, EXIF orientation applied, transparency
// over white, the first frame of an animation, nothing over MAX_PIXELS decoded.
import { hashFile } from './filehash.js';
import { pdqVariants } from './pdq.js';

// Decompression-bomb guard, the same as workers/images.py: the header's claimed size is
// checked before anything is decoded.
export const MAX_PIXELS = 100_000_000;
// A decode that takes longer than this is given up (the page must never hang on a file).
export const DECODE_TIMEOUT_MS = 60_000;
// How far into a JPEG the frame header (SOF) is looked for; EXIF and ICC segments come first.
const JPEG_HEADER_SCAN = 4 * 1024 * 1024;

export class PhotoError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'PhotoError';
    this.code = code;   // 'empty' | 'too_large' | 'not_an_image' | 'undecodable'
  }
}

async function bytesAt(blob, start, length) {
  return new Uint8Array(await blob.slice(start, start + length).arrayBuffer());
}

const be16 = (b, o) => (b[o] << 8) | b[o + 1];
const le16 = (b, o) => b[o] | (b[o + 1] << 8);
const be32 = (b, o) => ((b[o] << 24) >>> 0) + ((b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]);
const le24 = (b, o) => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16);
const le32s = (b, o) => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
const ascii = (b, o, n) => String.fromCharCode(...b.subarray(o, o + n));

function truncated(kind) {
  return new PhotoError('undecodable', `the ${kind} file is truncated: its header is incomplete`);
}

async function jpegDimensions(blob) {
  let offset = 2;
  const limit = Math.min(blob.size, JPEG_HEADER_SCAN);
  while (offset + 4 <= limit) {
    const head = await bytesAt(blob, offset, 10);
    if (head.length < 4) break;
    if (head[0] !== 0xff) throw new PhotoError('undecodable', 'the JPEG file is corrupt (no marker where one is due)');
    const marker = head[1];
    if (marker === 0xff) { offset += 1; continue; }                       // fill byte
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { offset += 2; continue; }
    if (marker === 0xd9 || marker === 0xda) break;                        // end, or scan before any frame
    const length = be16(head, 2);
    if (length < 2) throw new PhotoError('undecodable', 'the JPEG file is corrupt (bad segment length)');
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (head.length < 9) throw truncated('JPEG');
      return { type: 'jpeg', width: be16(head, 7), height: be16(head, 5) };
    }
    offset += 2 + length;
  }
  if (offset >= blob.size) throw truncated('JPEG');
  throw new PhotoError('undecodable', 'the JPEG file has no frame header');
}

function webpDimensions(b) {
  if (b.length < 30) throw truncated('WebP');
  const chunk = ascii(b, 12, 4);
  if (chunk === 'VP8 ') return { type: 'webp', width: le16(b, 26) & 0x3fff, height: le16(b, 28) & 0x3fff };
  if (chunk === 'VP8L') {
    const bits = (b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)) >>> 0;
    return { type: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (chunk === 'VP8X') return { type: 'webp', width: le24(b, 24) + 1, height: le24(b, 27) + 1 };
  throw new PhotoError('undecodable', `the WebP file has an unknown first chunk`);
}

// ISO BMFF (AVIF, HEIF): the largest 'ispe' (image spatial extent) among the first bytes.
function isobmffDimensions(b) {
  let best = null;
  for (let i = 4; i + 16 <= b.length; i++) {
    if (b[i] === 0x69 && b[i + 1] === 0x73 && b[i + 2] === 0x70 && b[i + 3] === 0x65) {   // 'ispe'
      const width = be32(b, i + 8);
      const height = be32(b, i + 12);
      if (!best || width * height > best.width * best.height) best = { type: 'avif', width, height };
    }
  }
  if (!best) throw new PhotoError('undecodable', 'the image size is not found in its header');
  return best;
}

// Format and claimed size from the first bytes, without decoding anything.
export async function readDimensions(blob) {
  const b = await bytesAt(blob, 0, 64 * 1024);
  if (b.length >= 8 && b[0] === 0x89 && ascii(b, 1, 3) === 'PNG') {
    if (b.length < 24) throw truncated('PNG');
    return { type: 'png', width: be32(b, 16), height: be32(b, 20) };
  }
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return jpegDimensions(blob);
  if (b.length >= 6 && (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a')) {
    if (b.length < 10) throw truncated('GIF');
    return { type: 'gif', width: le16(b, 6), height: le16(b, 8) };
  }
  if (b.length >= 12 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 4) === 'WEBP') return webpDimensions(b);
  if (b.length >= 2 && ascii(b, 0, 2) === 'BM') {
    if (b.length < 26) throw truncated('BMP');
    if (le32s(b, 14) === 12) return { type: 'bmp', width: le16(b, 18), height: le16(b, 20) };
    return { type: 'bmp', width: Math.abs(le32s(b, 18)), height: Math.abs(le32s(b, 22)) };
  }
  if (b.length >= 12 && ascii(b, 4, 4) === 'ftyp' && ['avif', 'avis'].includes(ascii(b, 8, 4))) {
    return isobmffDimensions(b);
  }
  throw new PhotoError('not_an_image', 'the file is not an image in a format we take (JPEG, PNG, GIF, WebP, BMP, AVIF)');
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new PhotoError('undecodable', `${what} took longer than ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// The ImageBitmap of a File or Blob, after its header's size is checked against MAX_PIXELS
// (a small file claiming 30000 x 30000 pixels is refused before anything is decoded) and
// within DECODE_TIMEOUT_MS. Throws PhotoError (with .code). Photos and selfies both use it.
export async function decodeBitmap(blob, options) {
  if (!blob || !blob.size) throw new PhotoError('empty', 'the file is empty');
  const claimed = await readDimensions(blob);
  if (!(claimed.width > 0 && claimed.height > 0)) {
    throw new PhotoError('undecodable', `the image claims a size of ${claimed.width}x${claimed.height}`);
  }
  if (claimed.width * claimed.height > MAX_PIXELS) {
    throw new PhotoError('too_large', `the image claims ${claimed.width}x${claimed.height} pixels, ` +
      `more than ${MAX_PIXELS / 1e6} megapixels`);
  }
  try {
    return await withTimeout(createImageBitmap(blob, options), DECODE_TIMEOUT_MS, 'decoding the image');
  } catch (err) {
    if (err instanceof PhotoError) throw err;
    throw new PhotoError('undecodable', `the image data cannot be decoded (${err && err.message || err})`);
  }
}

// Decode a File or Blob to RGBA pixels over white: {rgba: Uint8ClampedArray, width, height}.
// Throws PhotoError (with .code) for what cannot or must not be decoded.
export async function decodeImage(blob) {
  const bitmap = await decodeBitmap(blob, {
    imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  try {
    const { width, height } = bitmap;
    if (!width || !height) throw new PhotoError('undecodable', 'the image decoded to no pixels');
    if (width * height > MAX_PIXELS) {
      throw new PhotoError('too_large', `the image is ${width}x${height} pixels, more than ${MAX_PIXELS / 1e6} megapixels`);
    }
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext('2d', { willReadFrequently: true, alpha: false });
    if (!ctx) throw new PhotoError('undecodable', 'no canvas of that size could be made');
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, width, height);
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, width, height).data;
    return { rgba, width, height };
  } finally {
    bitmap.close();
  }
}

// Signals of one photo: {sha256, md5, width, height, pdq: [{variant, hash, quality}]}, or
// {error: {code, message}}. Never throws; gives up on a decode that takes too long.
// onProgress(0..1) after each stage (decode, PDQ variants, file hashes), so her bar moves.
export async function photoSignals(blob, onProgress = () => {}) {
  try {
    const { rgba, width, height } = await withTimeout(decodeImage(blob), DECODE_TIMEOUT_MS, 'decoding the image');
    onProgress(0.4);
    const pdq = pdqVariants(rgba, width, height);
    onProgress(0.8);
    const { sha256, md5 } = await hashFile(blob, (p) => onProgress(0.8 + 0.2 * p));
    return { sha256, md5, width, height, pdq };
  } catch (err) {
    if (err instanceof PhotoError) return { error: { code: err.code, message: err.message } };
    return { error: { code: 'undecodable', message: `the image could not be read (${err && err.message || err})` } };
  }
}
