// A module Web Worker that turns the victim's photos and selfies into signals, so the page
// never freezes while images are decoded, hashed and measured. Nothing here touches the
// network except loading our own face model files from our own origin.
//
// Messages in:  {id, op: 'photo', file}  -> photoSignals(file)
//               {id, op: 'faces', file}  -> faces of a selfie (descriptors as plain arrays)
//               {id, op: 'source', file} -> both: an ordinary photo of herself (PDQ and faces)
// Messages out: {id, progress: 0..1} while working, then {id, result} or {id, error: {code, message}}.
import { hashFile } from './filehash.js';
import { decodeBitmap, photoSignals } from './photo.js';

let pdqLoaded = null;
const pdqModule = () => (pdqLoaded ||= import('./pdq.js'));

const MODEL_URL = new URL('../vendor/face-api/model/', import.meta.url).href;
let facesReady = null;

async function faceModule() {
  if (!facesReady) {
    facesReady = import('./faces.js').then(async (mod) => {
      await mod.loadFaceModels(MODEL_URL);
      return mod;
    });
    facesReady.catch(() => { facesReady = null; });
  }
  return facesReady;
}

async function faces(file, progress) {
  progress(0.05);
  const mod = await faceModule();
  progress(0.4);
  let bitmap;
  try {      // the same size guard and time limit as photos
    bitmap = await decodeBitmap(file, { imageOrientation: 'from-image', colorSpaceConversion: 'none' });
  } catch (e) {
    return { error: { code: e.code || 'undecodable', message: 'the selfie could not be read' } };
  }
  try {
    const found = await mod.describeFaces(bitmap);
    progress(1);
    return {
      width: bitmap.width,
      height: bitmap.height,
      faces: found.map((f) => ({
        box: { x: f.box.x, y: f.box.y, width: f.box.width, height: f.box.height },
        score: f.score,
        descriptor: Array.from(f.descriptor),
      })),
    };
  } finally {
    bitmap.close();
  }
}

// One job at a time, in the order they came: memory stays bounded on a phone.
let chain = Promise.resolve();

self.onmessage = (event) => {
  const { id, op, file } = event.data || {};
  if (op === 'pdq') {
    // One video frame from the page: answered at once, between the steps of a longer job
    // (the video's own file hashing runs in the chain and awaits its reads).
    pdqModule().then(({ pdqHash }) => {
      const { rgba, width, height } = event.data;
      self.postMessage({ id, result: pdqHash(rgba, width, height) });
    }).catch((e) => self.postMessage({ id, error: { code: 'internal', message: String((e && e.message) || e) } }));
    return;
  }
  chain = chain.then(async () => {
    const progress = (p) => self.postMessage({ id, progress: p });
    try {
      let result;
      if (op === 'photo') {
        progress(0.05);
        result = await photoSignals(file, progress);
        progress(1);
      } else if (op === 'filehash') {
        result = await hashFile(file, progress);
      } else if (op === 'faces') {
        result = await faces(file, progress);
      } else if (op === 'source') {
        const photo = await photoSignals(file, (p) => progress(p / 2));
        result = photo.error ? photo : { ...photo, ...(await faces(file, (p) => progress(0.5 + p / 2))) };
      } else {
        result = { error: { code: 'internal', message: `unknown operation ${op}` } };
      }
      if (result && result.error) self.postMessage({ id, error: result.error });
      else self.postMessage({ id, result });
    } catch (e) {
      self.postMessage({ id, error: { code: 'internal', message: String((e && e.message) || e) } });
    }
  });
};
self.postMessage({ ready: true });
