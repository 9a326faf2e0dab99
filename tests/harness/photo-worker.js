// Module worker for tests: photoSignals off the main thread, as the intake page runs it.
import { photoSignals } from '/static/js/photo.js';

self.onmessage = async (event) => {
  const blob = await (await fetch(event.data.url)).blob();
  self.postMessage(await photoSignals(blob));
};
