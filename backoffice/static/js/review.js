// The review queue: click to reveal a blurred picture, keyboard shortcuts, select all.
// All behaviour lives here (strict CSP: no inline script or style in the page).
const rows = Array.from(document.querySelectorAll('.review-row'));
let current = -1;

function reveal(row) {
  const img = row.querySelector('img.thumb');
  if (!img) return;
  img.classList.toggle('blurred');
  img.classList.toggle('revealed');
}

function focusRow(i) {
  if (!rows.length) return;
  current = Math.max(0, Math.min(rows.length - 1, i));
  rows.forEach((r, j) => r.classList.toggle('current', j === current));
  rows[current].focus({ preventScroll: true });
  rows[current].scrollIntoView({ block: 'nearest' });
}

for (const [i, row] of rows.entries()) {
  const button = row.querySelector('button.reveal');
  if (button) {
    button.addEventListener('click', (event) => {
      event.preventDefault();
      reveal(row);
      focusRow(i);
    });
  }
  row.addEventListener('click', (event) => {
    if (!event.target.closest('button, input, a')) focusRow(i);
  });
}

const all = document.getElementById('select-all');
if (all) {
  all.addEventListener('change', () => {
    for (const box of document.querySelectorAll('input.pick')) box.checked = all.checked;
  });
}

const ACTIONS = { c: '.do-confirm', r: '.do-reject', u: '.do-unsure' };

document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && (target.tagName === 'INPUT' && target.type !== 'checkbox' || target.tagName === 'TEXTAREA' || target.tagName === 'SELECT')) return;
  const key = event.key.toLowerCase();
  if (key === 'j') { focusRow(current + 1); event.preventDefault(); return; }
  if (key === 'k') { focusRow(current < 0 ? 0 : current - 1); event.preventDefault(); return; }
  if (current < 0) return;
  const row = rows[current];
  if (key === 'v') { reveal(row); event.preventDefault(); return; }
  if (key === 'x') { const box = row.querySelector('input.pick'); box.checked = !box.checked; event.preventDefault(); return; }
  if (ACTIONS[key]) {
    const button = row.querySelector(ACTIONS[key]);
    if (button) { event.preventDefault(); button.click(); }
  }
});

document.documentElement.dataset.reviewReady = '1';
