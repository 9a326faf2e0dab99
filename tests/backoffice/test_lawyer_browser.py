"""A lawyer's day in real headless Chromium: every link the lawyer is shown opens (none answers
403 or 500), the case page exports the evidence PDF, `kesu evidence verify` accepts it and
refuses it once one byte is changed, and the back office's own check says the same."""
import base64
from collections import deque
from urllib.parse import urljoin, urlsplit

import pyotp
import pytest
from conftest import TEST_PASSPHRASE, kesu_cli, make_instance, serve_app, wait_for
from selenium.webdriver.common.by import By
from takedown_helpers import make_domain, make_takedown
from test_match import jpeg, new_case, picture, registered_signals
from test_review_browser import kept_media

from workers.matching import matcher as match
from workers.system import context

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "lawyer@example.org", "a long lawyer password 42"

STATUS_JS = """const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: 'same-origin', redirect: 'follow'}).then(r => done(r.status), e => done(String(e)));"""

EXPORT_JS = """const done = arguments[arguments.length - 1];
const form = document.getElementById('export-form');
fetch(form.action, {method: 'POST', body: new FormData(form), credentials: 'same-origin'})
  .then(r => r.arrayBuffer()).then(buf => { let s = ''; const b = new Uint8Array(buf);
    for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
    done(btoa(s)); }, e => done('error ' + e));"""


@pytest.fixture
def lawyer_site(tmp_path):
    instance = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}")
    from backoffice import accounts, create_app
    secret = accounts.add(instance, EMAIL, PASSWORD, "lawyer")
    match.reset()
    context.set_instance(instance)
    image = picture(21)
    case_id = new_case(instance, registered_signals(image, jpeg(image)))
    media = kept_media(instance, "http://bad.example/post/1", "http://cdn.bad.example/1.jpg", jpeg(image))
    assert match.match_stored_media(instance, media)
    make_takedown(instance, case_id, make_domain(instance, "bad.example"), "http://bad.example/post/1",
                  status="requested")
    url, stop = serve_app(create_app(instance))
    yield {"url": url, "instance": instance, "secret": secret, "case": case_id}
    stop()
    match.reset()


def test_lawyer_walks_every_link_to_a_verified_evidence_pdf(chromium, lawyer_site, tmp_path):
    base, instance = lawyer_site["url"], lawyer_site["instance"]
    driver = chromium
    driver.delete_all_cookies()
    driver.get(base + "/login?lang=ja")
    driver.find_element(By.ID, "email").send_keys(EMAIL)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "code").send_keys(pyotp.TOTP(lawyer_site["secret"]).now())
    driver.find_element(By.ID, "login").click()
    wait_for(driver, "document.readyState === 'complete' && !!document.getElementById('welcome')")

    # Every same-site link shown to the lawyer, page after page (GET only: forms are not followed).
    seen, todo, bad = set(), deque([base + "/"]), []
    while todo and len(seen) < 80:
        page = todo.popleft()
        driver.get(page)
        wait_for(driver, "document.readyState === 'complete'")
        hrefs = driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")
        for href in hrefs:
            href = urljoin(page, href).split("#", 1)[0]
            parts = urlsplit(href)
            if not href.startswith(base) or parts.path.startswith("/static") or href in seen:
                continue
            seen.add(href)
            status = driver.execute_async_script(STATUS_JS, href)
            if status in (403, 500) or not isinstance(status, int):
                bad.append((page, href, status))
            elif status == 200 and "lang=" not in (parts.query or ""):
                todo.append(href)
    assert not bad, bad
    case_url = f"{base}/cases/{lawyer_site['case']}"
    assert case_url in seen                                         # the case is reachable by links

    # The case page: export the PDF, check it with the command line and with the back office.
    driver.get(case_url)
    wait_for(driver, "!!document.getElementById('export-form')")
    pdf = base64.b64decode(driver.execute_async_script(EXPORT_JS))
    assert pdf.startswith(b"%PDF-")
    out = tmp_path / "case.pdf"
    out.write_bytes(pdf)
    env = {"KESU_INSTANCE": str(instance.settings.instance), "KESU_DATABASE_URL": instance.settings.database_url,
           "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}
    import subprocess
    text = subprocess.run(["pdftotext", "-raw", str(out), "-"], capture_output=True, text=True, check=True).stdout
    assert "lawyer@example.org" in text and "staff:" not in text          # people by name, not staff:N
    ok = kesu_cli("evidence", "verify", str(out), env=env)
    assert ok.returncode == 0 and "OK:" in ok.stdout, (ok.stdout, ok.stderr)
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(pdf[:1000] + bytes([pdf[1000] ^ 0x20]) + pdf[1001:])
    refused = kesu_cli("evidence", "verify", str(changed), env=env)
    assert refused.returncode == 1 and "NOT INTACT" in refused.stderr

    for path, verdict in ((out, "改変なし"), (changed, "改変あり")):
        driver.get(case_url + "?lang=ja")
        wait_for(driver, "!!document.getElementById('verify-file')")
        driver.find_element(By.ID, "verify-file").send_keys(str(path))
        driver.find_element(By.ID, "verify").click()
        wait_for(driver, "!!document.getElementById('verify-result')")
        assert verdict in driver.find_element(By.ID, "verify-result").text
