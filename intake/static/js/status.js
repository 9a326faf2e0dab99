// The status page: check a case with its number and passphrase, add more, remove single
// items, or withdraw the whole case. The passphrase travels only in a request header to our
// own origin; nothing is kept in the browser.
import { setupForm, setupPage, t } from './intake.js';
import { fetchWithWork } from './pow.js';

const $ = (sel) => document.querySelector(sel);

// The same folding as the server (crypto/passphrases.py normalize: NFKC, katakana as
// hiragana, lower case, separators to "-"); the header carries it percent-encoded (§6.3).
export function normalizePassphrase(text) {
  return (text || '').normalize('NFKC').toLowerCase()
    .replace(/[\u30a1-\u30f6]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0x60))
    .split(/[\s\-_.,・、。/]+/u).filter(Boolean).join('-');
}
export function normalizeNumber(text) {
  return (text || '').normalize('NFKC').replace(/\D+/g, '');
}

function credentials() {
  return { number: normalizeNumber($('#case-number').value), passphrase: normalizePassphrase($('#passphrase').value) };
}

function api(method, path, body) {
  const { number, passphrase } = credentials();
  const headers = { 'X-Kesu-Passphrase': encodeURIComponent(passphrase) };
  if (body) headers['Content-Type'] = 'application/json';
  return fetchWithWork(`/api/v1/cases/${encodeURIComponent(number || '0')}${path}`, {
    method, headers, body, credentials: 'omit', cache: 'no-store',
  }, { onWork: (working) => { if (working) say(t('pow-working')); } });
}

function say(text, kind = '') {
  const box = $('#status');
  box.replaceChildren();
  box.className = `status ${kind}`.trim();
  if (text) box.append(Object.assign(document.createElement('p'), { textContent: text }));
}

function failed(response) {
  if (response.status === 429) say(t('slow-down', response.headers.get('Retry-After') || '60'), 'error');
  else if (response.status === 401) say(t('unauthorised'), 'error');
  else say(t('net-error'), 'error');
  $('#case-actions').hidden = true;
  $('#add-area').hidden = true;
}

function renderStatus(s) {
  const box = $('#status');
  box.replaceChildren();
  box.className = 'status ok';
  box.dataset.status = s.status;
  const line = document.createElement('p');
  const strong = document.createElement('strong');
  strong.textContent = t(`status-${s.status}`);     // words only: the code stays in data-status
  line.append(strong);
  const counts = document.createElement('p');
  counts.textContent = t('counts-line', s.found, s.requested, s.removed, s.updated);
  box.append(line, counts);

  const list = $('#items');
  list.replaceChildren();
  const numbers = {};                // "Photo 1", "Photo 2": her words, never the item id
  for (const it of s.items || []) {
    const li = document.createElement('li');
    li.dataset.item = it.item;
    const name = document.createElement('span');
    numbers[it.kind] = (numbers[it.kind] || 0) + 1;
    name.textContent = t('item-name', t(`kind-${it.kind}`), numbers[it.kind]);
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'secondary item-remove';
    remove.textContent = t('remove');
    remove.setAttribute('aria-label', `${t('remove')}: ${name.textContent}`);
    remove.addEventListener('click', () => removeItem(it.item, remove, li));
    li.append(name, remove);
    list.append(li);
  }
  $('#items-empty').hidden = (s.items || []).length > 0 || s.pending > 0;
  $('#items-pending').hidden = !(s.pending > 0);
  $('#case-actions').hidden = false;
}

async function check() {
  const { number, passphrase } = credentials();
  if (!number || !passphrase) { say(t('need-credentials'), 'error'); return; }
  $('#check').disabled = true;
  try {
    const response = await api('GET', '/status');
    if (!response.ok) { failed(response); return; }
    renderStatus(await response.json());
  } catch (e) {
    say(t('net-error'), 'error');
  } finally {
    $('#check').disabled = false;
  }
}

async function removeItem(item, button, li) {
  if (!button.classList.contains('confirming')) {
    button.classList.add('confirming', 'danger');
    button.classList.remove('secondary');
    button.textContent = t('remove-confirm');
    return;
  }
  button.disabled = true;
  try {
    const response = await api('DELETE', `/items/${encodeURIComponent(item)}`);
    if (response.status === 204) {
      li.replaceChildren(Object.assign(document.createElement('span'), { textContent: t('removed') }));
      li.classList.add('removed');
      return;
    }
    failed(response);
  } catch (e) {
    say(t('net-error'), 'error');
  }
  button.disabled = false;
}

async function withdraw() {
  $('#withdraw-confirm').disabled = true;
  try {
    const response = await api('DELETE', '');
    if (response.status === 204) {
      for (const id of ['#case-number', '#passphrase']) $(id).value = '';
      $('#case-actions').hidden = true;
      $('#add-area').hidden = true;
      $('#items').replaceChildren();
      say(t('withdrawn'), 'ok');
      $('#status').dataset.status = 'withdrawn';
      $('#status').focus();
      return;
    }
    failed(response);
  } catch (e) {
    say(t('net-error'), 'error');
  } finally {
    $('#withdraw-confirm').disabled = false;
    $('#withdraw-panel').hidden = true;
  }
}

setupPage();
$('#status').setAttribute('tabindex', '-1');
$('#check-form').addEventListener('submit', (e) => { e.preventDefault(); check(); });
$('#check').addEventListener('click', check);
for (const id of ['#case-number', '#passphrase']) {      // Enter checks, as a submit button would
  $(id).addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.isComposing) { e.preventDefault(); check(); }
  });
}
$('#add-more').addEventListener('click', () => {
  $('#add-area').hidden = false;
  $('#add-area select, #add-area input').focus();
});
$('#withdraw').addEventListener('click', () => {
  $('#withdraw-panel').hidden = false;
  $('#withdraw-confirm').focus();
});
$('#withdraw-cancel').addEventListener('click', () => {
  $('#withdraw-panel').hidden = true;
  $('#withdraw').focus();
});
$('#withdraw-confirm').addEventListener('click', withdraw);
setupForm({
  mode: 'add',
  root: $('#add-area'),
  send: (body) => api('POST', '/signals', body),
  onSent: async () => {
    $('#add-area').hidden = true;
    await check();
    const note = document.createElement('p');
    note.id = 'added';
    note.textContent = t('sent-add');
    $('#status').append(note);
  },
});
document.documentElement.classList.add('js');
