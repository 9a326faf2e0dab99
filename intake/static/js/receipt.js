// The receipt: her case number and passphrase, shown once, and ways to keep them that all
// happen on this phone (print, a picture drawn here, a QR code drawn here): the server
// never renders a page or an image that holds her passphrase.
//
// Until she says she has kept them (and has seen them once more), leaving by any link of
// the page asks first, and so does closing or reloading the tab. The quick exit never asks:
// it leaves at once, and the page says that the receipt goes with it.

const $ = (sel) => document.querySelector(sel);
const QR_MODULE = '../vendor/qrcode-generator/qrcode.mjs';
const QR_UTF8 = '../vendor/qrcode-generator/qrcode_UTF8.mjs';

// --- the guard on leaving ---------------------------------------------------------------------
// guard.ask(proceed) is set while leaving would lose the receipt; intake.js's links and the
// quick exit consult it.
export const guard = { ask: null };

window.addEventListener('beforeunload', (e) => {
  if (!guard.ask) return;
  e.preventDefault();
  e.returnValue = '';
});

function askBeforeLeaving() {
  const dialog = $('#leave-receipt');
  let proceed = null;
  $('#leave-stay').addEventListener('click', () => dialog.close('stay'));
  $('#leave-go').addEventListener('click', () => dialog.close('go'));
  dialog.addEventListener('close', () => {
    const go = dialog.returnValue === 'go' && proceed;
    proceed = null;
    if (go) {
      guard.ask = null;
      go();
    }
  });
  return (next) => {
    proceed = next;
    dialog.returnValue = '';
    dialog.showModal();
    $('#leave-stay').focus();
  };
}

// --- the QR code --------------------------------------------------------------------------------
let qrLibrary;
async function qrModules() {
  if (qrLibrary === undefined) {
    try {
      const [{ qrcode }, { stringToBytes }] = await Promise.all([
        import(new URL(QR_MODULE, import.meta.url).href), import(new URL(QR_UTF8, import.meta.url).href)]);
      qrcode.stringToBytes = stringToBytes;       // Japanese labels and words as UTF-8 bytes
      qrLibrary = qrcode;
    } catch (e) {
      qrLibrary = null;                          // not installed: the other ways remain
    }
  }
  return qrLibrary;
}

// Draws the QR code of `text` on ctx at (x, y), `size` pixels wide, with its quiet zone.
function drawQr(qrcode, text, ctx, x, y, size) {
  const qr = qrcode(0, 'M');
  qr.addData(text, 'Byte');
  qr.make();
  const count = qr.getModuleCount();
  const cell = Math.floor(size / (count + 8));
  const offset = Math.floor((size - cell * count) / 2);
  ctx.fillStyle = '#fff';
  ctx.fillRect(x, y, size, size);
  ctx.fillStyle = '#000';
  for (let r = 0; r < count; r++) {
    for (let c = 0; c < count; c++) {
      if (qr.isDark(r, c)) ctx.fillRect(x + offset + c * cell, y + offset + r * cell, cell, cell);
    }
  }
}

// --- the picture ----------------------------------------------------------------------------------
function wrapWords(ctx, words, width) {
  const lines = [];
  let line = '';
  for (const word of words) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > width) {
      lines.push(line);
      line = word;
    } else {
      line = next;
    }
  }
  if (line) lines.push(line);
  return lines;
}

async function drawCard(receipt, t) {
  const canvas = document.createElement('canvas');
  canvas.width = 1080;
  canvas.height = 1500;
  const ctx = canvas.getContext('2d');
  const font = (px, weight = 400) => `${weight} ${px}px system-ui, "Hiragino Sans", "Noto Sans CJK JP", sans-serif`;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#222';
  let y = 110;
  ctx.font = font(54, 700);
  ctx.fillText(t('card-title'), 70, y);
  y += 60;
  ctx.font = font(32);
  ctx.fillStyle = '#555';
  ctx.fillText(receipt.org, 70, y);
  y += 100;
  ctx.fillStyle = '#222';
  ctx.font = font(34, 700);
  ctx.fillText(t('card-number'), 70, y);
  y += 80;
  ctx.font = font(72, 700);
  ctx.fillText(receipt.number.replace(/(\d{4})(?=\d)/g, '$1 '), 70, y);
  y += 100;
  ctx.font = font(34, 700);
  ctx.fillText(t('card-passphrase'), 70, y);
  ctx.font = font(56, 700);
  for (const line of wrapWords(ctx, receipt.passphrase.split('-'), 940)) {
    y += 80;
    ctx.fillText(line, 70, y);
  }
  y += 70;
  ctx.font = font(30);
  ctx.fillStyle = '#555';
  ctx.fillText(`${t('card-where')} ${receipt.statusUrl}`, 70, y);
  const qrcode = await qrModules();
  if (qrcode) drawQr(qrcode, receipt.qrText, ctx, 70, y + 40, Math.min(560, canvas.height - y - 60));
  return canvas;
}

async function saveCard(receipt, t) {
  const canvas = await drawCard(receipt, t);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement('a'), { href: url, download: 'receipt.png' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  $('#card-note').hidden = false;
}

// --- the receipt -----------------------------------------------------------------------------------
// Shows the receipt of a case just registered. t: the page's string lookup (intake.js).
export function showReceipt({ number, passphrase, t }) {
  const statusUrl = new URL('/status', window.location.href).href;
  const receipt = {
    number, passphrase, statusUrl,
    org: document.body.dataset.org || '',
    qrText: `${t('card-number')}: ${number}\n${t('card-passphrase')}: ${passphrase.split('-').join(' ')}\n${statusUrl}`,
  };
  for (const id of ['case-number', 'case-number-again']) $(`#${id}`).textContent = number;
  for (const id of ['passphrase', 'passphrase-again']) $(`#${id}`).textContent = passphrase;
  guard.ask = askBeforeLeaving();

  $('#save-card').addEventListener('click', () => saveCard(receipt, t));
  const showQr = $('#show-qr');
  qrModules().then((qrcode) => { if (!qrcode) showQr.hidden = true; });
  showQr.addEventListener('click', async () => {
    const qrcode = await qrModules();
    const area = $('#qr-area');
    if (!qrcode) return;
    const canvas = $('#receipt-qr');
    canvas.width = canvas.height = 330;
    drawQr(qrcode, receipt.qrText, canvas.getContext('2d'), 0, 0, 330);
    area.hidden = !area.hidden;
    showQr.setAttribute('aria-expanded', String(!area.hidden));
  });

  const check = $('#kept-check');
  $('#kept').addEventListener('click', () => {
    check.hidden = false;
    check.focus();
  });
  $('#kept-back').addEventListener('click', () => {
    check.hidden = true;
    $('#print').focus();
  });
  $('#kept-confirm').addEventListener('click', () => {
    guard.ask = null;
    check.hidden = true;
    $('#kept').hidden = true;
    $('#kept-done').hidden = false;
  });
}
