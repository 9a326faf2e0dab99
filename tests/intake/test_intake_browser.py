"""The whole intake flow in real headless Chromium against a real intake server.

Register (a generated photo, an ffmpeg video, a face-api sample photo as selfie) -> case
number and passphrase shown -> the worker takes it in -> status page -> add more ->
remove one item -> withdraw; afterwards database, key store, blobs and Redis hold nothing
of the case. Every request the browser made is checked: none to another origin, each body
only a sealed box holding exactly the payload the page showed (no pixels, no plaintext signal).
"""
import base64
import json
import re
import uuid
from urllib.parse import urlsplit

import pytest
import redis
from conftest import make_chromium, wait_for
from intake_harness import REDIS_URL, make_media, open_portal, phone_viewport, run_axe, screenshot
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import func, select

from crypto import passphrases
from crypto.sealing import unseal
from store.models import AuditEntry, Case, Item, Signal, Submission
from workers.jobs import rq_form

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    with open_portal(tmp_path_factory.mktemp("portal")) as p:
        yield p


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def browser():
    ua = f"kesu-test-agent-{uuid.uuid4().hex}"
    driver = make_chromium(390, 844, extra_args=[f"--user-agent={ua}"], performance_log=True)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"X-Forwarded-For": "203.0.113.77"}})
    driver.kesu_ua = ua
    yield driver
    driver.quit()


def click(driver, element):
    """A real click, after scrolling the element clear of the sticky header."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def requests_seen(driver) -> list[dict]:
    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            out.append(msg["params"]["request"])
    return out


def fill_form(driver, files, selfies=(), category="adult_ncii", root="#intake-form"):
    form = driver.find_element(By.CSS_SELECTOR, root)
    Select(form.find_element(By.ID, "category")).select_by_value(category)
    form.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    if selfies:
        form.find_element(By.ID, "selfies").send_keys("\n".join(str(f) for f in selfies))
        click(driver, form.find_element(By.ID, "consent-faces"))
    click(driver, form.find_element(By.ID, "consent-takedown"))


def review(driver, timeout=150):
    click(driver, driver.find_element(By.ID, "review"))
    wait_for(driver, "!document.querySelector('#submit').disabled", timeout)
    return json.loads(driver.find_element(By.ID, "payload-preview").get_attribute("textContent"))


def test_full_flow(portal, media, browser):
    d = browser
    d.get(portal.url + "/?lang=en")
    wait_for(d, "document.documentElement.classList.contains('js')", 20)
    assert run_axe(d) == []

    # Nothing may be sent before the form is complete.
    click(d, d.find_element(By.ID, "review"))
    assert d.find_element(By.ID, "form-error").is_displayed()
    assert d.find_element(By.ID, "submit").get_attribute("disabled") is not None

    fill_form(d, [media["generated.jpg"], media["clip.webm"]], [media["selfie"]])
    payload = review(d)
    kinds = {i["item"]: i["kind"] for i in payload["items"]}
    assert kinds == {"p1": "photo", "v1": "video"}, "a selfie with several faces waits for her choice"
    # Several faces: a clear choice; she picks the first.
    radios = d.find_elements(By.CSS_SELECTOR, ".face-choice input[type=radio]")
    assert len(radios) >= 3                      # the faces and "leave this selfie out"
    click(d, radios[0])
    phone_viewport(d)
    d.execute_script("document.querySelector('#review-area').scrollIntoView()")
    screenshot(d, "review-en.png")
    payload = json.loads(d.find_element(By.ID, "payload-preview").get_attribute("textContent"))
    types = sorted({(s["item"], s["type"]) for s in payload["signals"]})
    assert types == [("p1", "md5"), ("p1", "pdq"), ("p1", "sha256"), ("s1", "face"),
                     ("v1", "md5"), ("v1", "sha256"), ("v1", "vpdq")]
    assert all(s["type"] != "face" or s["item"] == "s1" for s in payload["signals"])
    face = next(s for s in payload["signals"] if s["type"] == "face")
    assert len(face["descriptor"]) == 128
    assert payload["consent"]["takedown"] is True and payload["consent"]["faces"] is True
    assert run_axe(d) == []

    click(d, d.find_element(By.ID, "submit"))
    wait_for(d, "document.querySelector('#case-number').textContent.length > 0", 60)
    number = d.find_element(By.ID, "case-number").text
    passphrase = d.find_element(By.ID, "passphrase").text
    assert re.fullmatch(r"\d{12}", number) and len(passphrase.split("-")) == passphrases.word_count("en")
    assert passphrase.isascii()                  # an English page: English words
    screenshot(d, "registered-en.png")
    assert run_axe(d) == []
    # Files and signals are gone from the page once sent.
    assert d.execute_script("return document.querySelector('#files').files.length") == 0
    assert d.find_element(By.ID, "payload-preview").get_attribute("textContent") == ""

    # The queue holds the submission id only.
    conn = redis.Redis.from_url(REDIS_URL)
    from rq import Queue
    from rq.job import Job
    jobs = Queue("default", connection=conn).jobs
    assert len(jobs) == 1 and (jobs[0].func_name, jobs[0].args[:1]) == rq_form("take_in")
    assert len(jobs[0].args) == 2 and isinstance(jobs[0].args[1], int) and not jobs[0].kwargs
    portal.run_worker()
    with portal.staff.session() as s:
        assert s.execute(select(func.count()).select_from(Submission)).scalar() == 0
        assert s.execute(select(func.count()).select_from(Item)).scalar() == 3
    from workers.cases.decrypt import case_signals
    with portal.staff.session() as s:
        case_id = s.execute(select(Case.id)).scalar()
    stored = case_signals(portal.staff, case_id)
    assert {(x["item"], x["type"]) for x in stored} == set(types)

    # Status page.
    d.get(portal.url + "/status?lang=en")
    wait_for(d, "document.documentElement.classList.contains('js')", 20)
    assert run_axe(d) == []
    d.find_element(By.ID, "case-number").send_keys(number)
    d.find_element(By.ID, "passphrase").send_keys(passphrase.upper().replace("-", " "))
    click(d, d.find_element(By.ID, "check"))
    wait_for(d, "document.querySelector('#status').dataset.status === 'received'", 30)
    assert len(d.find_elements(By.CSS_SELECTOR, "#items li")) == 3
    assert run_axe(d) == []

    # Add more.
    click(d, d.find_element(By.ID, "add-more"))
    fill_form(d, [media["more.png"]], root="#add-area")
    more = review(d)
    assert [i["kind"] for i in more["items"]] == ["photo"] and more["items"][0]["item"] not in kinds
    more_plain = more
    click(d, d.find_element(By.ID, "submit"))
    wait_for(d, "document.querySelector('#added') !== null", 60)
    portal.run_worker()
    click(d, d.find_element(By.ID, "check"))
    wait_for(d, "document.querySelectorAll('#items li').length === 4", 30)

    # Remove one item (two steps), then withdraw everything (with confirmation).
    remove = d.find_element(By.CSS_SELECTOR, "#items li[data-item='p1'] .item-remove")
    click(d, remove)
    click(d, remove)
    wait_for(d, "document.querySelector(\"#items li[data-item='p1']\").classList.contains('removed')", 30)
    with portal.staff.session() as s:
        assert s.execute(select(func.count()).select_from(Signal).where(Signal.item == "p1")).scalar() == 0
        assert s.execute(select(func.count()).select_from(Item)).scalar() == 3
    click(d, d.find_element(By.ID, "withdraw"))
    assert d.find_element(By.ID, "withdraw-confirm").is_displayed()
    click(d, d.find_element(By.ID, "withdraw-confirm"))
    wait_for(d, "document.querySelector('#status').dataset.status === 'withdrawn'", 30)

    # Nothing of the case is left: rows, key, blobs, Redis.
    with portal.staff.session() as s:
        for model in (Case, Item, Signal, Submission):
            assert s.execute(select(func.count()).select_from(model)).scalar() == 0, model
        assert [a.action for a in s.execute(select(AuditEntry)).scalars()] == ["case.withdraw"]
    assert not [p for p in portal.settings.keystore_dir.glob("*") if p.name != "keystore.id"]   # no case key left
    assert not portal.settings.blob_dir.exists() or not any(p.is_file() for p in portal.settings.blob_dir.rglob("*"))
    assert conn.llen("rq:queue:default") == 0
    # What Redis still holds are the matcher's notifications, by internal id only (the matcher
    # runs and forgets them; no match worker runs in this test).
    left = [Job.fetch(k.decode().split(":", 2)[2], connection=conn)
            for k in conn.keys("rq:job:*") if k.count(b":") == 2]
    assert {(j.func_name, j.args) for j in left} <= {rq_form("case_added", case_id), rq_form("case_withdrawn", case_id)}
    assert rq_form("case_withdrawn", case_id) in {(j.func_name, j.args) for j in left}
    # The right passphrase no longer opens anything.
    status = d.execute_async_script(
        "const done = arguments[2]; fetch(`/api/v1/cases/${arguments[0]}/status`, "
        "{headers: {'X-Kesu-Passphrase': arguments[1]}}).then(r => done(r.status));", number, passphrase)
    assert status == 401

    # Every request went to our origin; no body carried image/video bytes or a plaintext signal.
    origin = urlsplit(portal.url)
    for req in requests_seen(d):
        u = urlsplit(req["url"])
        assert u.scheme in ("data", "blob") or (u.scheme, u.netloc) == (origin.scheme, origin.netloc), req["url"]
    secrets_ = plaintext_values(payload) | plaintext_values(more_plain)
    bodies = [body for _m, _p, _h, body in portal.recorder.requests if body]
    assert len(bodies) == 2                      # the case and the add-more, nothing else
    opened = []
    for body in bodies:
        sent = json.loads(body)
        # nothing beside the sealed box but the page's language (for the passphrase's words, §6.3)
        assert set(sent) <= {"key_id", "sealed", "language"} and sent.get("language") in (None, "en"), sorted(sent)
        text = body.decode("utf-8", "replace")
        for value in secrets_:
            assert value not in text, "a plaintext signal was sent"
        opened.append(json.loads(unseal(portal.staff.private_keys().private_key, base64.b64decode(sent["sealed"]))))
    # The boxes hold exactly what the page showed her it would send: signals, no pixels.
    assert opened == [payload, more_plain]


def test_a_video_this_browser_cannot_decode_still_gives_its_file_hashes(portal, browser, tmp_path):
    # An iPhone video whose codec the browser lacks (here: bytes no decoder takes) is not left
    # out: its SHA-256 and MD5 still find exact copies.
    import hashlib
    import os
    clip = tmp_path / "holiday.mp4"
    clip.write_bytes(os.urandom(50_000))
    d = browser
    d.get(portal.url + "/?lang=en")
    wait_for(d, "document.documentElement.classList.contains('js')", 20)
    fill_form(d, [clip])
    payload = review(d)
    data = clip.read_bytes()
    assert [i["kind"] for i in payload["items"]] == ["video"]
    assert sorted((s["type"], s["hash"]) for s in payload["signals"]) == [
        ("md5", hashlib.md5(data).hexdigest()), ("sha256", hashlib.sha256(data).hexdigest())]


def plaintext_values(payload) -> set[str]:
    values = set()
    for s in payload["signals"]:
        if "hash" in s:
            values.add(s["hash"])
        if s["type"] == "vpdq":
            values.update(f[2] for f in s["frames"])
        if s["type"] == "face":
            values.update(json.dumps(x) for x in s["descriptor"][:16] if len(json.dumps(x)) > 8)
    return values


def test_screenshots_and_languages(portal, browser):
    d = browser
    phone_viewport(d)
    for lang, title in (("ja", "誰にも送らずに"), ("en", "without sending them")):
        d.get(portal.url + f"/?lang={lang}")
        wait_for(d, "document.documentElement.classList.contains('js')", 20)
        assert d.execute_script("return document.documentElement.lang") == lang
        assert title in d.find_element(By.TAG_NAME, "body").text
        assert run_axe(d) == []
        screenshot(d, f"intake-{lang}.png")
        d.get(portal.url + f"/status?lang={lang}")
        wait_for(d, "document.documentElement.classList.contains('js')", 20)
        assert run_axe(d) == []
        screenshot(d, f"status-{lang}.png")
    # Japanese when the browser asks for it.
    headers = {"Accept-Language": "ja-JP,ja;q=0.9,en;q=0.5"}
    client = portal.app.test_client()
    assert '<html lang="ja">' in client.get("/", headers=headers).get_data(as_text=True)
    assert "選んで" in client.get("/", headers=headers).get_data(as_text=True)
