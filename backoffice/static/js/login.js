// The login page: when the server answered 429 with a proof-of-work challenge, solve it
// before the form is sent again (pow.js, the intake's solver), so that the right password
// and code always get in, however often someone else fails with this address.
import { solve } from './pow.js';

const form = document.querySelector('#login-form');
if (form && form.dataset.workChallenge) {
  form.addEventListener('submit', async (event) => {
    if (form.dataset.solved === '1') return;
    event.preventDefault();
    const status = document.querySelector('#work-status');
    const button = document.querySelector('#login');
    status.hidden = false;
    button.disabled = true;
    try {
      const { workChallenge: challenge, workBits, workCount } = form.dataset;
      document.querySelector('#work').value = await solve({
        challenge, bits: Number(workBits), count: Number(workCount),
      });
      form.dataset.solved = '1';
      form.submit();
    } finally {
      button.disabled = false;
    }
  });
}
