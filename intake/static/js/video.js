// Signals of a video, computed in the victim's browser: SHA-256 and MD5 of the file bytes
// (streamed, filehash.js) and vPDQ, one PDQ hash per second of video.
//
// vPDQ samples the frame shown at t = 0, 1, 2, ... seconds (every t < duration), the way a
// <video> element shows it after seeking there, drawn to a canvas at the video's natural
// size and hashed with pdq.js. workers/videos.py computes the same frames on the server
// (the last frame whose timestamp is <= t); tests/workers/signals/test_video_conformance.py holds the two
// sides together.
//
// videoSignals never throws and never hangs: every wait has a time limit, and whatever goes
// wrong comes back as {error: {code, message}} next to the hashes of the bytes (which can be
// computed for any file). Codes:
//   unsupported_video  the browser cannot decode it (unknown container, a codec it lacks such
//                      as HEVC without a platform decoder, garbage bytes, a damaged or cut-off
//                      file, a file with sound only)
//   too_large          frames over MAX_PIXELS
//   timeout            loading or a seek stalled past its time limit
//   read_error         the file could not be read (then there are no hashes either)
//   internal           anything else (a bug)
import { hashFile } from './filehash.js';

export const EVERY_SECONDS = 1;
// Caps, the same as workers/videos.py: at most this many sampled frames (3 hours at 1/s)
// and no frame larger than this many pixels (8K UHD).
export const MAX_FRAMES = 10800;
export const MAX_PIXELS = 7680 * 4320;

const LOAD_TIMEOUT_MS = 30000;   // metadata and the first frame
const SEEK_TIMEOUT_MS = 15000;   // one seek
// requestVideoFrameCallback after 'seeked', then draw anyway: it does not fire when the seek
// lands on the frame already shown (a slide-show video), and Chromium's 'seeked' already has it.
const FRAME_CALLBACK_MS = 500;

class VideoSignalError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// Resolve on the first of `okEvents`, reject on 'error' or after `ms` milliseconds.
function waitEvent(video, okEvents, ms, what) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      for (const e of okEvents) video.removeEventListener(e, onOk);
      video.removeEventListener('error', onError);
    };
    const onOk = (event) => { cleanup(); resolve(event); };
    const onError = () => { cleanup(); reject(mediaError(video)); };
    const timer = setTimeout(() => {
      cleanup();
      reject(new VideoSignalError('timeout', `${what}: no answer from the video decoder within ${ms} ms`));
    }, ms);
    for (const e of okEvents) video.addEventListener(e, onOk);
    video.addEventListener('error', onError);
  });
}

function mediaError(video) {
  const err = video.error;
  const detail = err ? `${err.code}${err.message ? ': ' + err.message : ''}` : 'unknown';
  // 3 = MEDIA_ERR_DECODE, 4 = MEDIA_ERR_SRC_NOT_SUPPORTED: this browser cannot show it.
  if (!err || err.code === 3 || err.code === 4) {
    return new VideoSignalError('unsupported_video', `this browser cannot decode the video (media error ${detail})`);
  }
  return new VideoSignalError('internal', `media error ${detail}`);
}

// The frame now shown: after 'seeked', wait for the compositor to present it (where
// requestVideoFrameCallback exists; it may not fire for a paused, unchanged frame, hence the
// short limit), then draw.
function presented(video) {
  if (typeof video.requestVideoFrameCallback !== 'function') return Promise.resolve();
  return new Promise((resolve) => {
    let handle = 0;
    const timer = setTimeout(() => {
      if (video.cancelVideoFrameCallback) video.cancelVideoFrameCallback(handle);
      resolve();
    }, FRAME_CALLBACK_MS);
    handle = video.requestVideoFrameCallback(() => { clearTimeout(timer); resolve(); });
  });
}

async function seek(video, t) {
  if (Math.abs(video.currentTime - t) < 1e-9 && !video.seeking && video.readyState >= 2) {
    // Already there (t = 0 right after loading): nothing will fire 'seeked'.
    return;
  }
  const done = waitEvent(video, ['seeked'], SEEK_TIMEOUT_MS, `seek to ${t} s`);
  const frame = presented(video);
  video.currentTime = t;
  await done;
  await frame;
}

// Some files (MediaRecorder WebM) carry no duration: seek far past the end, and the browser
// learns where the end is.
async function knownDuration(video) {
  if (Number.isFinite(video.duration)) return video.duration;
  const done = waitEvent(video, ['seeked'], SEEK_TIMEOUT_MS, 'looking for the end of the video');
  video.currentTime = Number.MAX_SAFE_INTEGER;
  await done;
  if (!Number.isFinite(video.duration)) throw new VideoSignalError('unsupported_video', 'the video has no known duration');
  return video.duration;
}

// Sample times: 0, every, 2*every, ... while t < duration (the same rule as the server).
export function sampleTimes(duration, every = EVERY_SECONDS, maxFrames = MAX_FRAMES) {
  const times = [];
  for (let k = 0; times.length < maxFrames; k++) {
    const t = k * every;
    if (k > 0 && t >= duration - 1e-3) break;
    times.push(t);
  }
  return times;
}

// Calls onFrame(seconds, rgba, width, height) for each sampled frame, in order.
// Returns {duration, count}. Throws VideoSignalError.
export async function sampleFrames(blob, onFrame, { every = EVERY_SECONDS, maxFrames = MAX_FRAMES, onProgress = () => {} } = {}) {
  if (typeof document === 'undefined') {
    throw new VideoSignalError('internal', 'sampleFrames needs a page (a <video> element)');
  }
  const url = URL.createObjectURL(blob);
  const video = document.createElement('video');
  // Rendered (so the compositor presents frames and requestVideoFrameCallback fires) but
  // invisible and out of the way.
  video.style.cssText = 'position:fixed;left:0;top:0;width:1px;height:1px;opacity:0;pointer-events:none';
  video.muted = true;
  video.playsInline = true;
  video.preload = 'auto';
  video.setAttribute('aria-hidden', 'true');
  try {
    (document.body || document.documentElement).appendChild(video);
    const loaded = waitEvent(video, ['loadeddata'], LOAD_TIMEOUT_MS, 'loading the video');
    video.src = url;
    await loaded;
    const width = video.videoWidth;
    const height = video.videoHeight;
    if (!width || !height) {
      // The container opened (maybe an audio track plays) but no video frame can be shown.
      throw new VideoSignalError('unsupported_video', 'this browser cannot decode the video track');
    }
    if (width * height > MAX_PIXELS) {
      throw new VideoSignalError('too_large', `frames of ${width}x${height} exceed the limit of ${MAX_PIXELS} pixels`);
    }
    const duration = await knownDuration(video);
    const times = sampleTimes(duration, every, maxFrames);
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d', { willReadFrequently: true, alpha: false });
    for (let i = 0; i < times.length; i++) {
      await seek(video, times[i]);
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, width, height);
      ctx.drawImage(video, 0, 0, width, height);
      const { data } = ctx.getImageData(0, 0, width, height);
      await onFrame(times[i], data, width, height);
      onProgress((i + 1) / times.length);
    }
    return { duration, count: times.length };
  } finally {
    video.removeAttribute('src');
    video.load();
    video.remove();
    URL.revokeObjectURL(url);
  }
}

function asError(e) {
  if (e instanceof VideoSignalError) return { code: e.code, message: e.message };
  return { code: 'internal', message: String(e && e.message ? e.message : e) };
}

// hashBytes(file, onProgress) -> {sha256, md5} and hashFrame(rgba, width, height) ->
// {hash, quality} default to this thread; the intake page passes its signals worker's, so
// that only seeking and reading frames stay on the page's thread (taps keep registering).
export async function videoSignals(file, { onProgress, hashBytes = hashFile, hashFrame = null } = {}) {
  const report = typeof onProgress === 'function' ? onProgress : () => {};
  let hashShare = 0;
  let frameShare = 0;
  let last = -1;
  const progress = () => {
    // The bytes are read once for the hashes; decoding is the slow part.
    const p = Math.min(1, 0.2 * hashShare + 0.8 * frameShare);
    if (p > last) {
      last = p;
      try { report(p); } catch (_) { /* the caller's callback must not break hashing */ }
    }
  };
  progress();

  const hashing = hashBytes(file, (p) => { hashShare = p; progress(); })
    .then((h) => ({ ok: h }), (e) => ({ err: e }));

  let frames = null;
  let frameError = null;
  try {
    const pdq = hashFrame || (await import('./pdq.js')).pdqHash;
    const vpdq = [];
    const { duration } = await sampleFrames(file, async (t, rgba, w, h) => {
      const { hash, quality } = await pdq(rgba, w, h);
      vpdq.push([t, quality, hash]);
    }, { onProgress: (p) => { frameShare = p; progress(); } });
    frames = { duration, vpdq };
  } catch (e) {
    frameError = asError(e);
  }

  const hashed = await hashing;
  if (hashed.err) {
    return { error: { code: 'read_error', message: `the file could not be read: ${asError(hashed.err).message}` } };
  }
  const { sha256, md5 } = hashed.ok;
  if (frameError) return { sha256, md5, error: frameError };
  frameShare = 1;
  hashShare = 1;
  progress();
  return { sha256, md5, duration: frames.duration, vpdq: frames.vpdq };
}
