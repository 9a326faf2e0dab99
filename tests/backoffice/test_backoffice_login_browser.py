"""Staff log in with password + TOTP in real headless Chromium; replay refused; logout ends it."""
import time
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from conftest import TEST_PASSPHRASE, kesu_cli, make_instance, serve_app, wait_for
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.browser


@pytest.fixture
def backoffice(tmp_path):
    instance = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}")
    env = {"KESU_INSTANCE": str(instance.settings.instance), "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}
    added = kesu_cli("staff", "add", "admin@example.org", "--role", "admin", "--password-stdin",
                     env=env, input="correct horse battery staple\n")
    assert added.returncode == 0, added.stderr
    uri = added.stdout.strip().splitlines()[0]
    assert uri.startswith("otpauth://totp/")
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    from backoffice import create_app
    url, stop = serve_app(create_app(instance))
    yield url, secret
    stop()


def fresh_code(secret, used=None):
    """A code for a time step not used yet (waits for the next 30 s step when needed)."""
    if used is None:
        used = set()
    totp = pyotp.TOTP(secret)
    while True:
        step = int(time.time() // 30)
        if step not in used:
            used.add(step)
            return totp.generate_otp(step)
        time.sleep(0.5)


def log_in(driver, url, code, password="correct horse battery staple"):
    driver.get(url + "/login?lang=en")
    driver.find_element(By.ID, "email").send_keys("admin@example.org")
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "code").send_keys(code)
    form = driver.find_element(By.ID, "login-form")
    driver.find_element(By.ID, "login").click()
    # The answer is a new page: the overview, or the login form again with a message.
    WebDriverWait(driver, 30).until(EC.staleness_of(form))
    wait_for(driver, "!!(document.getElementById('welcome') || document.querySelector('.flash'))")


def test_login_replay_and_logout(chromium, backoffice):
    url, secret = backoffice
    chromium.delete_all_cookies()
    code = fresh_code(secret)
    log_in(chromium, url, code)
    assert chromium.find_elements(By.ID, "welcome"), chromium.page_source[:500]
    stolen = chromium.get_cookie("kesu_staff")["value"]

    chromium.find_element(By.ID, "logout").click()
    wait_for(chromium, "!!document.getElementById('login-form')")
    chromium.get(url + "/")
    assert chromium.find_elements(By.ID, "login-form")           # logged out

    # The old session cookie no longer opens anything.
    chromium.add_cookie({"name": "kesu_staff", "value": stolen, "path": "/"})
    chromium.get(url + "/")
    assert chromium.find_elements(By.ID, "login-form")

    # The same TOTP code again is refused, even with the right password.
    chromium.delete_all_cookies()
    log_in(chromium, url, code)
    assert not chromium.find_elements(By.ID, "welcome")
    assert chromium.find_elements(By.CSS_SELECTOR, ".flash.error")


def test_login_page_is_japanese_when_asked(chromium, backoffice):
    url, _ = backoffice
    chromium.get(url + "/login?lang=ja")
    assert chromium.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ja"
    assert chromium.find_element(By.TAG_NAME, "h1").text == "ログイン"
    chromium.get(url + "/login?lang=en")
    assert chromium.find_element(By.TAG_NAME, "h1").text == "Log in"


def test_a_throttled_login_gets_in_by_solving_the_challenge_in_the_page(chromium, tmp_path):
    """Someone failed twenty times with her address: her login is answered with a challenge
    at full production size, login.js solves it, and she is in (no waiting out a delay)."""
    from backoffice import accounts, auth, create_app
    from web.throttle import Throttle
    instance = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}")
    secret = accounts.add(instance, "admin@example.org", "correct horse battery staple", "admin")
    app = create_app(instance)
    gate = app.extensions["kesu.login_throttle"] = Throttle(clock=lambda: 0.0)     # time stands still
    with app.test_request_context():
        key = auth._login_key("admin@example.org")
    for _ in range(20):
        gate.begin(key)
        gate.end(key, ok=False)
    url, stop = serve_app(app)
    try:
        chromium.delete_all_cookies()
        code = pyotp.TOTP(secret).now()
        log_in(chromium, url, code)
        assert not chromium.find_elements(By.ID, "welcome")
        form = chromium.find_element(By.ID, "login-form")
        assert int(form.get_attribute("data-work-count")) == Throttle().work.max_count
        chromium.find_element(By.ID, "password").send_keys("correct horse battery staple")
        chromium.find_element(By.ID, "code").send_keys(code)
        started = time.monotonic()
        chromium.find_element(By.ID, "login").click()
        WebDriverWait(chromium, 60).until(EC.staleness_of(form))
        wait_for(chromium, "!!document.getElementById('welcome')")
        print(f"login.js solved the largest challenge and logged in in {time.monotonic() - started:.1f} s")
        assert time.monotonic() - started < 30
    finally:
        stop()
