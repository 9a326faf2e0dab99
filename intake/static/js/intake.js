// The intake form: choose files, make signals on this device, review exactly what will be
// sent, seal it to the organisation's key and send only the sealed box.
//
// Photos and selfies are decoded and measured in a Web Worker (signals-worker.js); videos
// need a <video> element, so video.js seeks and reads their frames here, and the worker
// hashes the bytes and each frame, so the page stays responsive. Nothing is stored in the
// browser but the HTTP cache of our static files: no cookies, no localStorage, no history
// entries (links use location.replace).
import { fetchFaceTool } from './facetool.js';
import { guard as receiptGuard, showReceipt } from './receipt.js';
import { seal, toBase64 } from './seal.js';
import { videoSignals } from './video.js';
import { fetchWithWork } from './pow.js';

const $ = (sel, root = document) => root.querySelector(sel);

// --- strings (rendered by the server in the page's language) -------------------------------
export function t(key, ...args) {
  const el = document.querySelector(`#i18n [data-k="${key}"]`);
  let text = el ? el.textContent : key;
  args.forEach((a, i) => { text = text.split(`{${i + 1}}`).join(String(a)); });
  return text;
}

// --- things every intake page does ------------------------------------------------------------
const blobUrls = new Set();
export function blobUrl(file) {
  const url = URL.createObjectURL(file);
  blobUrls.add(url);
  return url;
}
export function revokeBlobUrls() {
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls.clear();
}

function quickExit() {
  const target = document.body.dataset.exit || 'about:blank';
  receiptGuard.ask = null;          // the quick exit never asks, even with a receipt on screen
  revokeBlobUrls();
  for (const input of document.querySelectorAll('input, textarea')) {
    if (input.type === 'checkbox' || input.type === 'radio') input.checked = false;
    else input.value = '';
  }
  document.title = '';
  document.body.replaceChildren();
  window.location.replace(target);
}

export function setupPage() {
  const exit = $('#exit');      // a link (it works without JavaScript); here it replaces the page
  if (exit) exit.addEventListener('click', (e) => { e.preventDefault(); quickExit(); });
  // Esc twice in quick succession leaves too (once could be meant for something else).
  let lastEscape = 0;
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    const now = Date.now();
    if (now - lastEscape < 1500) quickExit();
    lastEscape = now;
  });
  // Links between our pages replace the current entry: the back button shows nothing new.
  // Any link that leaves the page asks first while a receipt would be lost (receipt.js).
  for (const a of document.querySelectorAll('a[href]')) {
    const url = new URL(a.href, window.location.href);
    const leaves = /^https?:$/.test(url.protocol) && !(url.pathname === window.location.pathname
      && url.search === window.location.search && url.hash);
    if (!leaves || a.id === 'exit') continue;
    a.addEventListener('click', (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey) return;
      const go = a.hasAttribute('data-replace') ? () => window.location.replace(a.href) : null;
      if (receiptGuard.ask) {
        e.preventDefault();
        receiptGuard.ask(go || (() => { window.location.href = a.href; }));
      } else if (go) {
        e.preventDefault();
        go();
      }
    });
  }
  const skip = $('a.skip');
  if (skip) {
    skip.addEventListener('click', (e) => {
      e.preventDefault();
      const main = $('#main');
      main.setAttribute('tabindex', '-1');
      main.focus();
    });
  }
  window.addEventListener('pagehide', revokeBlobUrls);
}

// --- the signals worker -------------------------------------------------------------------------
let worker = null;
let workerSeq = 0;
const pending = new Map();

function signalsWorker() {
  if (!worker) {
    worker = new Worker(new URL('./signals-worker.js', import.meta.url), { type: 'module' });
    worker.onmessage = (event) => {
      const msg = event.data || {};
      const job = pending.get(msg.id);
      if (!job) return;
      if ('progress' in msg) { job.onProgress(msg.progress); return; }
      pending.delete(msg.id);
      if (msg.error) job.resolve({ error: msg.error });
      else job.resolve(msg.result);
    };
    worker.onerror = (event) => {
      const message = event.message || 'the signals worker failed';
      for (const job of pending.values()) job.resolve({ error: { code: 'internal', message } });
      pending.clear();
      worker = null;
    };
  }
  return worker;
}

function askWorker(message, transfer = [], onProgress = () => {}) {
  return new Promise((resolve) => {
    const id = ++workerSeq;
    pending.set(id, { resolve, onProgress });
    signalsWorker().postMessage({ id, ...message }, transfer);
  });
}

function inWorker(op, file, onProgress) {
  return askWorker({ op, file }, [], onProgress);
}

// A video's heavy parts in the worker: its bytes' hashes, and each frame's PDQ (the frame's
// pixels are moved there, not copied). Only seeking and reading frames stay on this thread.
const videoInWorker = {
  hashBytes: async (file, onProgress) => {
    const r = await inWorker('filehash', file, onProgress);
    if (!r || r.error) throw new Error((r && r.error && r.error.message) || 'the file could not be read');
    return r;
  },
  hashFrame: async (rgba, width, height) => {
    const r = await askWorker({ op: 'pdq', rgba, width, height }, [rgba.buffer]);
    if (!r || r.error) throw new Error((r && r.error && r.error.message) || 'a frame could not be measured');
    return r;
  },
};

export function stopWorker() {
  if (worker) worker.terminate();
  worker = null;
  pending.clear();
}

// --- helpers ----------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function localDay() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function kindOf(file) {
  if (file.type.startsWith('video/')) return 'video';
  if (file.type.startsWith('image/')) return 'photo';
  return /\.(mp4|m4v|mov|webm|mkv|avi|3gp|ogv)$/i.test(file.name) ? 'video' : 'photo';
}

// Up to five selfies (ahead, turned left and right, with and without glasses): the case's
// faces form one template, matched on its best face (bench/bench_face_roc.py).
const MAX_SELFIES = 5;
const WORKER_OP = { photo: 'photo', selfie: 'faces', source: 'source' };

function randomSuffix() {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

// --- the form -----------------------------------------------------------------------------------
// options: {mode: 'create'|'add', root: element holding the form, send(body) -> Response,
//           onSent(json)}
export function setupForm(options) {
  const root = options.root || document;
  const form = $('#intake-form', root);
  const q = (sel) => $(sel, form);
  const state = { entries: [], reviewed: false, busy: false };

  // The message goes where she is sent: into the fieldset of the field it is about (a
  // message far below the field would be off screen on a phone).
  const errorHome = q('#form-error').previousElementSibling;
  const showError = (text, focus) => {
    const box = q('#form-error');
    box.textContent = text;
    box.hidden = !text;
    const near = focus && focus.closest('fieldset');
    if (near) near.append(box);
    else errorHome.after(box);
    if (focus) {
      focus.focus();
      box.scrollIntoView({ block: 'nearest' });
    }
  };

  const invalidate = () => {
    if (state.busy) return;
    state.reviewed = false;
    q('#submit').disabled = true;
  };
  for (const input of form.querySelectorAll('input, select, textarea')) {
    input.addEventListener('change', invalidate);
  }

  function knownUrls() {
    return q('#known-urls').value.split(/\s+/).map((s) => s.trim()).filter(Boolean);
  }

  // Ordinary photos of herself (DESIGN §6.3 #no-images): only while that path is open.
  const sourcePhotos = () => (q('#no-images').checked ? [...q('#source-photos').files] : []);
  q('#no-images').addEventListener('change', () => {
    const open = q('#no-images').checked;
    q('#source-photos-area').hidden = !open;
    q('#no-images').setAttribute('aria-expanded', String(open));
  });

  function check() {
    const files = [...q('#files').files];
    const selfies = [...q('#selfies').files];
    const sources = sourcePhotos();
    if (!q('#category').value) return [t('need-category'), q('#category')];
    for (const url of knownUrls()) {
      if (!/^https?:\/\/\S+$/i.test(url)) return [t('bad-url', url), q('#known-urls')];
    }
    const email = q('#contact-email').value.trim();
    if (email && !/^[^@\s]+@[^@\s]+$/.test(email)) return [t('bad-email'), q('#contact-email')];
    if (!files.length && !selfies.length && !sources.length && !knownUrls().length) return [t('need-something'), q('#files')];
    if (selfies.length > MAX_SELFIES) return [t('too-many-selfies'), q('#selfies')];
    if (selfies.length && !q('#consent-faces').checked) return [t('need-faces'), q('#consent-faces')];
    if (sources.length && !q('#consent-faces').checked) return [t('need-faces-source'), q('#consent-faces')];
    if (!q('#consent-takedown').checked) return [t('need-takedown'), q('#consent-takedown')];
    return null;
  }

  function makeEntries() {
    const counters = { photo: 0, video: 0, selfie: 0, source: 0 };
    const letter = { photo: 'p', video: 'v', selfie: 's', source: 'o' };
    const suffix = options.mode === 'add' ? `-${randomSuffix()}` : '';
    const entries = [];
    const add = (file, kind) => {
      counters[kind] += 1;
      entries.push({
        item: `${letter[kind]}${counters[kind]}${suffix}`, kind, file, number: counters[kind],
        label: t(kind, counters[kind]), result: null, error: null, choice: null,
      });
    };
    for (const f of q('#files').files) add(f, kindOf(f));
    for (const f of q('#selfies').files) add(f, 'selfie');
    for (const f of sourcePhotos()) add(f, 'source');
    return entries;
  }

  // No second look: each picture and its file name stay hidden (blurred) until she taps
  // "Show" on that one item; a second tap hides it again.
  function renderEntry(entry) {
    const thumb = entry.kind === 'video'
      ? el('video', { class: 'thumb', src: blobUrl(entry.file), muted: true, playsinline: true,
        preload: 'metadata', 'aria-hidden': 'true' })
      : el('img', { class: 'thumb', src: blobUrl(entry.file), alt: '' });
    const fileName = el('p', { class: 'item-name', text: entry.file.name, hidden: true });
    const peek = el('button', { type: 'button', class: 'secondary peek', 'aria-pressed': 'false', text: t('peek-show') });
    peek.addEventListener('click', () => {
      const shown = !entry.ui.li.classList.toggle('concealed');
      fileName.hidden = !shown;
      peek.setAttribute('aria-pressed', String(shown));
      peek.textContent = t(shown ? 'peek-hide' : 'peek-show');
    });
    const labelId = `label-${entry.item}`;
    const label = el('input', { type: 'text', id: labelId, value: entry.label, maxlength: '200', autocomplete: 'off' });
    label.addEventListener('input', () => { entry.label = label.value || t(entry.kind, ''); preview(); });
    const progress = el('progress', { max: '1', value: '0', 'aria-label': entry.label });
    const status = el('p', { class: 'item-status', text: t('queued') });
    const extra = el('div', { class: 'faces' });
    const li = el('li', { class: `review-item concealed kind-${entry.kind}`, 'data-item': entry.item },
      el('div', { class: 'thumb-box' }, thumb, peek),
      el('div', { class: 'review-body' },
        el('p', { class: 'item-kind', text: t(entry.kind, counterOf(entry)) }), fileName,
        el('label', { for: labelId, text: t('label') }), label, progress, status, extra));
    entry.ui = { li, progress, status, extra };
    return li;
  }

  const counterOf = (entry) => entry.number;

  function signalsOf(entry) {
    const r = entry.result;
    if (!r || entry.error) return [];
    if (entry.kind === 'photo') {
      return [
        ...r.pdq.map((p) => ({ type: 'pdq', hash: p.hash, quality: p.quality, item: entry.item, variant: p.variant })),
        { type: 'sha256', hash: r.sha256, item: entry.item },
        { type: 'md5', hash: r.md5, item: entry.item },
      ];
    }
    if (entry.kind === 'video') {
      const out = [{ type: 'sha256', hash: r.sha256, item: entry.item }, { type: 'md5', hash: r.md5, item: entry.item }];
      if (r.vpdq && r.vpdq.length) out.push({ type: 'vpdq', frames: r.vpdq, item: entry.item });
      return out;
    }
    const faces = r.faces || [];
    let chosen = null;
    if (faces.length === 1) chosen = faces[0];
    else if (faces.length > 1 && Number.isInteger(entry.choice) && entry.choice >= 0) chosen = faces[entry.choice];
    const face = chosen ? [{ type: 'face', descriptor: chosen.descriptor, item: entry.item }] : [];
    if (entry.kind === 'source') {      // her ordinary photo: its PDQ (an edit keeps most of it) and her face
      return [...r.pdq.map((p) => ({ type: 'pdq', hash: p.hash, quality: p.quality, item: entry.item, variant: p.variant })),
        ...face];
    }
    return face;
  }

  function payload() {
    const included = state.entries.filter((e) => signalsOf(e).length);
    const email = q('#contact-email').value.trim();
    return {
      version: 1,
      category: q('#category').value,
      language: document.documentElement.lang === 'ja' ? 'ja' : 'en',
      known_urls: knownUrls(),
      contact: email ? { email } : null,
      consent: {
        takedown: q('#consent-takedown').checked,
        hotline: q('#consent-hotline').checked,
        share_hashes: q('#consent-share-hashes').checked,
        faces: q('#consent-faces').checked && state.entries.some((e) => e.kind === 'selfie' || e.kind === 'source'),
        at: localDay(),
      },
      signals: included.flatMap(signalsOf),
      items: included.map((e) => ({ item: e.item, kind: e.kind, label: e.label })),
    };
  }

  function preview() {
    const p = payload();
    q('#payload-preview').textContent = JSON.stringify(p, null, 1);
    q('#review-summary').textContent = t('summary', p.items.length);
    return p;
  }

  function facesUi(entry) {
    const box = entry.ui.extra;
    box.replaceChildren();
    const faces = entry.result.faces || [];
    if (faces.length === 0 && entry.kind === 'source') {     // no face: its fingerprints still go
      entry.ui.status.textContent = `${t('item-ok')} (${t('counts', signalsOf(entry).length)})`;
      return;
    }
    if (faces.length === 0) {
      entry.ui.status.textContent = t('faces-none');
      entry.ui.li.classList.add('left-out');
      return;
    }
    if (faces.length === 1) {
      entry.ui.status.textContent = t('faces-one');
      return;
    }
    entry.ui.status.textContent = '';
    const group = el('fieldset', { class: 'face-choice' }, el('legend', { text: t('faces-many') }));
    const img = new Image();
    img.src = blobUrl(entry.file);
    const name = `face-${entry.item}`;
    faces.forEach((face, i) => {
      const canvas = el('canvas', { width: '96', height: '96', class: 'face-crop', role: 'img', 'aria-label': t('faces-pick', i + 1) });
      img.decode().then(() => {
        const sx = img.naturalWidth / entry.result.width;
        const sy = img.naturalHeight / entry.result.height;
        canvas.getContext('2d').drawImage(img, face.box.x * sx, face.box.y * sy, face.box.width * sx, face.box.height * sy, 0, 0, 96, 96);
      }).catch(() => {});
      const id = `${name}-${i}`;
      const radio = el('input', { type: 'radio', name, id, value: String(i) });
      radio.addEventListener('change', () => { entry.choice = i; preview(); });
      group.append(el('div', { class: 'face-option' }, radio, el('label', { for: id }, canvas, el('span', { text: t('faces-pick', i + 1) }))));
    });
    const skipId = `${name}-skip`;
    const skip = el('input', { type: 'radio', name, id: skipId, value: 'skip' });
    skip.addEventListener('change', () => { entry.choice = -1; preview(); });
    group.append(el('div', { class: 'face-option' }, skip, el('label', { for: skipId, text: t(entry.kind === 'source' ? 'faces-skip-source' : 'faces-skip') })));
    box.append(group);
  }

  async function review() {
    if (state.busy) return;
    const problem = check();
    if (problem) { showError(problem[0], problem[1]); return; }
    showError('');
    state.busy = true;
    state.reviewed = false;
    q('#submit').disabled = true;
    q('#review').disabled = true;
    revokeBlobUrls();
    state.entries = makeEntries();
    const area = q('#review-area');
    const list = q('#review-list');
    list.replaceChildren(...state.entries.map(renderEntry));
    area.hidden = false;
    q('#review-title').focus();
    const total = state.entries.length;
    const overall = q('#review-progress');
    let done = 0;
    const setOverall = (part) => {
      overall.value = total ? (done + part) / total : 1;
      q('#review-status').textContent = t('working', done, total);
    };
    setOverall(0);
    try {
      for (const entry of state.entries) {
        const onProgress = (p) => { entry.ui.progress.value = p; setOverall(p); };
        entry.ui.status.textContent = t('item-working');
        let result;
        if (entry.kind === 'selfie' || entry.kind === 'source') {
          entry.ui.status.textContent = t('face-tool-wait');
          await startFaceTool();                 // one download, shown in step 3, then cached
          entry.ui.status.textContent = t('item-working');
        }
        if (entry.kind === 'video') result = await videoSignals(entry.file, { onProgress, ...videoInWorker });
        else result = await inWorker(WORKER_OP[entry.kind], entry.file, onProgress);
        entry.ui.progress.value = 1;
        // A video this browser cannot decode still has its file hashes: an exact copy matches.
        const hashesOnly = entry.kind === 'video' && result && result.error && result.sha256 && result.md5;
        if (!result || (result.error && !hashesOnly)) {
          entry.error = (result && result.error) || { code: 'internal' };
          entry.result = null;
          entry.ui.status.textContent = t('item-failed');
          entry.ui.li.classList.add('left-out');
        } else {
          entry.result = result;
          if (entry.kind === 'selfie' || entry.kind === 'source') facesUi(entry);
          else entry.ui.status.textContent = `${t('item-ok')} (${t('counts', signalsOf(entry).length)})`;
        }
        done += 1;
        setOverall(0);
      }
      q('#review-status').textContent = t('done');
      preview();
      state.reviewed = true;
      q('#submit').disabled = false;
    } finally {
      state.busy = false;
      q('#review').disabled = false;
    }
  }

  async function submit() {
    if (!state.reviewed || state.busy) return;
    const undecided = state.entries.find((e) => (e.kind === 'selfie' || e.kind === 'source') && e.result
      && (e.result.faces || []).length > 1 && e.choice === null);
    if (undecided) {
      showError(t('faces-choose'), undecided.ui.li.querySelector('input[type=radio]'));
      return;
    }
    const problem = check();
    if (problem) { showError(problem[0], problem[1]); return; }
    showError('');
    state.busy = true;
    q('#submit').disabled = true;
    const status = q('#submit-status');
    status.textContent = t('sealing');
    try {
      const bytes = new TextEncoder().encode(JSON.stringify(payload()));
      let response;
      for (let attempt = 0; attempt < 2; attempt++) {
        const keyResponse = await fetch('/api/v1/key', { credentials: 'omit', cache: 'no-store' });
        const { key_id: keyId, public_key: publicKey } = await keyResponse.json();
        const sealed = await toBase64(await seal(publicKey, bytes));
        // language: the passphrase comes in the language of this page (§6.3).
        response = await options.send(JSON.stringify({ key_id: keyId, sealed, language: document.documentElement.lang }));
        if (response.status !== 409) break;     // the key changed meanwhile: seal again
      }
      if (response.ok) {
        status.textContent = '';
        const body = response.status === 204 ? {} : await response.json();
        finish();
        options.onSent(body);
        return;
      }
      if (response.status === 413) status.textContent = t('too-large');
      else if (response.status === 429) status.textContent = t('slow-down', response.headers.get('Retry-After') || '60');
      else if (response.status === 401) status.textContent = t('unauthorised');
      else status.textContent = t('net-error');
      q('#submit').disabled = false;
    } catch (e) {
      status.textContent = t('net-error');
      q('#submit').disabled = false;
    } finally {
      state.busy = false;
    }
  }

  // After sending: forget the files, the thumbnails and the signals on this page.
  function finish() {
    stopWorker();
    revokeBlobUrls();
    state.entries = [];
    state.reviewed = false;
    form.reset();
    q('#review-list').replaceChildren();
    q('#payload-preview').textContent = '';
    q('#review-summary').textContent = '';
    q('#review-area').hidden = true;
    q('#submit').disabled = true;
  }

  // The face tool downloads when she reaches the selfie step (progress shown there).
  const faceToolUi = { bar: q('.face-tool-progress'), status: q('.face-tool-status'), t };
  const startFaceTool = () => fetchFaceTool(faceToolUi);
  for (const id of ['#selfies', '#consent-faces', '#source-photos']) {
    for (const type of ['focus', 'click', 'change']) q(id).addEventListener(type, startFaceTool);
  }

  q('#review').addEventListener('click', review);
  q('#submit').addEventListener('click', submit);
  form.addEventListener('submit', (e) => e.preventDefault());
  return { finish };
}

// --- the front page -------------------------------------------------------------------------------
function copyButtons() {
  for (const button of document.querySelectorAll('button.copy')) {
    button.addEventListener('click', async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        $('#copy-status').textContent = t('copied');
      } catch (e) {
        $('#copy-status').textContent = t('copy-failed');
      }
    });
  }
  const print = $('#print');
  if (print) print.addEventListener('click', () => window.print());   // the print sheet shows the receipt only
}

if (document.body.dataset.page === 'intake') {
  setupPage();
  copyButtons();
  setupForm({
    mode: 'create',
    send: (body) => fetchWithWork('/api/v1/cases', {
      method: 'POST', body, credentials: 'omit', cache: 'no-store',
      headers: { 'Content-Type': 'application/json' },
    }),
    onSent: ({ case_number: caseNumber, passphrase }) => {
      showReceipt({ number: caseNumber, passphrase, t });
      $('#intake-form').hidden = true;
      $('#intro').hidden = true;
      const result = $('#result');
      result.hidden = false;
      window.scrollTo(0, 0);
      result.focus({ preventScroll: true });
    },
  });
  document.documentElement.classList.add('js');
} else if (document.body.dataset.page === 'error') {
  setupPage();
  document.documentElement.classList.add('js');
}
