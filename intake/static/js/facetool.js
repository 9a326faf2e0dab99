// The face tool (face-api, its three nets' weights and the tfjs wasm binary) is ~14 MB: on a
// phone that is the longest wait of the intake. It is fetched here, on the page, once she
// reaches the selfie step (she taps "choose selfies" or the face consent), with a progress
// bar that moves; the files land in the browser's HTTP cache (static files are cached for a
// year under a versioned URL), so the signals worker then loads them without a second download.
//
// The list of files and their sizes comes from the page (body[data-face-tool], written by
// intake/main.py), so the bar shows real bytes, whatever compression the transfer used.

let started = null;

function toolFiles() {
  try {
    return JSON.parse(document.body.dataset.faceTool || '{}');
  } catch (e) {
    return {};
  }
}

function megabytes(bytes) {
  return (bytes / 1e6).toFixed(bytes < 10e6 ? 1 : 0);
}

async function fetchCounting(url, onBytes) {
  const response = await fetch(url, { credentials: 'omit' });
  if (!response.ok || !response.body) throw new Error(`face tool: ${response.status}`);
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    onBytes(value.byteLength);
  }
}

// Starts the download once (later calls return the same promise). ui: {bar, status, t}.
// Resolves when every file is in the cache; a failed download resolves too (the worker then
// loads what is missing itself, and says so if it cannot).
export function fetchFaceTool(ui) {
  if (started) return started;
  const { files = [], total = 0 } = toolFiles();
  if (!files.length) {
    started = Promise.resolve(false);
    return started;
  }
  let received = 0;
  const show = () => {
    const part = Math.min(received / total, 1);
    ui.bar.hidden = false;
    ui.bar.value = part;
    // The bar moves with every chunk; the words (a live region) change in steps of 10 %.
    const text = part >= 1 ? ui.t('face-tool-ready')
      : ui.t('face-tool-downloading', megabytes(total), Math.floor(part * 10) * 10);
    if (ui.status.textContent !== text) ui.status.textContent = text;
  };
  show();
  let lastShown = 0;
  started = Promise.all(files.map(([url]) => fetchCounting(url, (n) => {
    received += n;
    const now = performance.now();
    if (now - lastShown > 150) { lastShown = now; show(); }      // a status update every 150 ms at most
  }))).then(() => {
    received = total;
    show();
    return true;
  }, () => {
    ui.status.textContent = ui.t('face-tool-failed');
    started = null;                            // the next try downloads again
    return false;
  });
  return started;
}
