"""The review queue in real headless Chromium: sorted by confidence, flagged rows pink,
thumbnails blurred until clicked, keyboard decisions, confirm creates a Takedown, all audited."""
import hashlib
import json

import pyotp
import pytest
from conftest import make_instance, serve_app, wait_for
from PIL import ImageOps
from selenium.webdriver.common.by import By
from sqlalchemy import select
from test_match import crawled_signals, jpeg, new_case, picture, registered_signals

from crypto import envelope
from crypto.sealing import seal
from store.models import AuditEntry, Capture, Match, Media, Review, Takedown
from workers.matching import matcher as match
from workers.system import context

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "reviewer@example.org", "a long staff password 42"


def kept_media(instance, page: str, url: str, data: bytes) -> int:
    """A matched media as a capture keeps it: bytes in the blob store under the capture's key."""
    keys = instance.private_keys()
    data_key = envelope.new_key()
    with instance.session() as s:
        cap = Capture(url=page, final_url=page, status="ok", data_key=seal(keys.public_key, data_key))
        s.add(cap)
        s.flush()
        media = Media(capture_id=cap.id, url=url, sha256_key=envelope.keyed_name(instance.pepper, hashlib.sha256(data).digest()),
                      mime="image/jpeg", size=len(data), blob=instance.blobs.put(data_key, data),
                      signals=seal(keys.public_key, json.dumps(crawled_signals(data)).encode()))
        s.add(media)
        s.flush()
        return media.id


@pytest.fixture
def review_site(tmp_path):
    instance = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}")
    from backoffice import accounts, create_app, review
    secret = accounts.add(instance, EMAIL, PASSWORD, "staff")
    match.reset()
    context.set_instance(instance)

    strong, weak = picture(11), picture(12)
    case_a = new_case(instance, registered_signals(strong, jpeg(strong)))
    case_b = new_case(instance, registered_signals(weak, jpeg(weak)))
    # An exact copy (flagged) and a heavily changed re-upload (lower confidence), both kept.
    m1 = kept_media(instance, "http://bad.example/post/1", "http://cdn.bad.example/1.jpg", jpeg(strong))
    changed = ImageOps.mirror(weak).resize((160, 120))
    m2 = kept_media(instance, "http://other.example/p?id=2", "http://other.example/img/2.jpg", jpeg(changed, 35))
    assert match.match_stored_media(instance, m1) and match.match_stored_media(instance, m2)

    app = create_app(instance)
    if "review" not in app.blueprints:          # until the lead registers it in create_app
        app.register_blueprint(review.bp)
    url, stop = serve_app(app)
    yield {"url": url, "instance": instance, "secret": secret, "cases": (case_a, case_b), "media": (m1, m2)}
    stop()
    match.reset()


def log_in(driver, url, secret):
    driver.delete_all_cookies()
    driver.get(url + "/login?lang=en")
    driver.find_element(By.ID, "email").send_keys(EMAIL)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "code").send_keys(pyotp.TOTP(secret).now())
    driver.find_element(By.ID, "login").click()
    wait_for(driver, "document.readyState === 'complete' && !!document.getElementById('welcome')")


def test_review_queue_blur_keyboard_confirm_creates_takedown(chromium, review_site):
    site, instance = review_site, review_site["instance"]
    (case_a, case_b), (m1, m2) = site["cases"], site["media"]
    log_in(chromium, site["url"], site["secret"])
    chromium.get(site["url"] + "/review/?lang=en")
    wait_for(chromium, "document.documentElement.dataset.reviewReady === '1'")

    rows = chromium.find_elements(By.CSS_SELECTOR, "tr.review-row")
    assert [r.get_attribute("data-key") for r in rows] == [f"{case_a}:{m1}", f"{case_b}:{m2}"]
    assert "flagged" in rows[0].get_attribute("class")
    assert "flagged" not in rows[1].get_attribute("class")
    pink = chromium.execute_script(
        "return getComputedStyle(document.querySelector('tr.review-row.flagged td')).backgroundColor")
    assert pink == "rgb(253, 226, 234)"
    # The case's own labels beside the found item, never an image of hers.
    assert "photo p1" in rows[0].text and "matched" in rows[0].text

    # Blurred until clicked; the thumbnail is the kept image (not the placeholder).
    img = rows[0].find_element(By.CSS_SELECTOR, "img.thumb")
    wait_for(chromium, "document.querySelector('tr.review-row img.thumb').complete")
    assert chromium.execute_script("return arguments[0].naturalWidth", img) == 320
    assert "blur" in chromium.execute_script("return getComputedStyle(arguments[0]).filter", img)
    rows[0].find_element(By.CSS_SELECTOR, "button.reveal").click()
    wait_for(chromium, "!document.querySelector('tr.review-row img.thumb').classList.contains('blurred')")
    assert chromium.execute_script("return getComputedStyle(arguments[0]).filter", img) == "none"
    assert "blur" in chromium.execute_script(
        "return getComputedStyle(document.querySelectorAll('tr.review-row img.thumb')[1]).filter")

    # Keyboard: the revealed row is current; j moves to the second, k back, c confirms.
    body = chromium.find_element(By.TAG_NAME, "body")
    body.send_keys("j")
    wait_for(chromium, "document.querySelectorAll('tr.review-row')[1].classList.contains('current')")
    body.send_keys("k")
    wait_for(chromium, "document.querySelectorAll('tr.review-row')[0].classList.contains('current')")
    body.send_keys("c")
    wait_for(chromium, "!!document.querySelector('.flash') && document.readyState === 'complete'")

    with instance.session() as s:
        states = {(m.case_id, m.media_id): m.state for m in s.execute(select(Match)).scalars()}
        assert {k: v for k, v in states.items() if k == (case_a, m1)} == {(case_a, m1): "confirmed"}
        assert states[(case_b, m2)] == "new"
        tds = s.execute(select(Takedown)).scalars().all()
        assert [(t.case_id, t.url) for t in tds] == [(case_a, "http://bad.example/post/1")]
        assert s.execute(select(Review)).scalars().first().decision == "confirmed"
        actions = [a for a, in s.execute(select(AuditEntry.action))]
        for wanted in ("review.view", "media.thumbnail", "match.confirm", "takedown.create"):
            assert wanted in actions
    # After confirming, the new takedown is one click away.
    link = chromium.find_element(By.CSS_SELECTOR, "#new-takedowns a")
    assert link.get_attribute("href").endswith(f"/takedowns/{tds[0].id}") and link.text == f"KESU-{tds[0].id}"
    # The confirmed pair left the open queue; the other stays.
    rows = chromium.find_elements(By.CSS_SELECTOR, "tr.review-row")
    assert [r.get_attribute("data-key") for r in rows] == [f"{case_b}:{m2}"]

    # Bulk: select all on the page, reject.
    chromium.find_element(By.ID, "select-all").click()
    chromium.find_element(By.ID, "bulk-reject").click()
    wait_for(chromium, "!!document.getElementById('review-empty')")
    with instance.session() as s:
        assert {m.state for m in s.execute(select(Match).where(Match.media_id == m2)).scalars()} == {"rejected"}
        assert len(s.execute(select(Takedown)).scalars().all()) == 1


def test_review_needs_login_and_has_no_inline_script_or_style(chromium, review_site):
    import re
    import urllib.request
    site = review_site
    chromium.delete_all_cookies()
    chromium.get(site["url"] + "/review/")
    assert chromium.find_elements(By.ID, "login-form")
    opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                              {"redirect_request": lambda *a, **k: None}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(site["url"] + "/review/thumb/%d" % site["media"][0], timeout=10)
    assert refused.value.code in (302, 303) and "login" in refused.value.headers["Location"]

    log_in(chromium, site["url"], site["secret"])
    chromium.get(site["url"] + "/review/?lang=en")
    wait_for(chromium, "document.documentElement.dataset.reviewReady === '1'")
    html = chromium.page_source
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert " style=" not in html and "<style" not in html
    assert chromium.find_elements(By.CSS_SELECTOR, "tr.review-row")
