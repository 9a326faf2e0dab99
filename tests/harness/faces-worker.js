// Runs faces.js inside a module Web Worker on an ImageBitmap or an OffscreenCanvas.
import { loadFaceModels, describeFaces } from '/static/js/faces.js';

self.onmessage = async (event) => {
  try {
    const { bitmap, offscreen, model } = event.data;
    await loadFaceModels(model);
    let input = bitmap;
    if (offscreen) {
      input = new OffscreenCanvas(bitmap.width, bitmap.height);
      input.getContext('2d').drawImage(bitmap, 0, 0);
    }
    const faces = (await describeFaces(input)).map((f) => ({ box: f.box, score: f.score, descriptor: Array.from(f.descriptor) }));
    self.postMessage({ faces });
  } catch (err) {
    self.postMessage({ error: String(err && err.stack || err) });
  }
};
