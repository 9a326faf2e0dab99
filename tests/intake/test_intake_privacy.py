"""What the intake keeps, and what it leaves in the victim's browser: nothing identifying.

After a case is registered, checked, added to and taken in, a scan of the database file,
the key store, the blobs, the logs, every Redis key and the RQ job arguments finds no
plaintext signal, passphrase, case number, client IP or the unique User-Agent the client
sent. In the browser: no cookie, no storage, one history entry, no request elsewhere, and
the quick exit leaves by replacing the page.
"""
import json
import random
import re
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest
import redis
from conftest import make_chromium, redis_dump, wait_for
from intake_harness import REDIS_URL, open_portal
from selenium.webdriver.common.by import By

from crypto.sealing import b64, seal, unb64
from workers.jobs import rq_form

UA = f"kesu-privacy-probe-{uuid.uuid4().hex}"
IP = "198.51.100.213"


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    with open_portal(tmp_path_factory.mktemp("privacy"), remote_addr=IP) as p:   # IP: the client's own
        yield p


def call(portal, method, path, body=None, passphrase=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(portal.url + path, data=data, method=method,
                                 headers={"User-Agent": UA, "X-Forwarded-For": IP, "X-Real-IP": IP,
                                          "Content-Type": "application/json"})
    if passphrase:
        req.add_header("X-Kesu-Passphrase", passphrase)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def payload(rng: random.Random, item_suffix=""):
    hexes = lambda n: "".join(rng.choice("0123456789abcdef") for _ in range(n))  # noqa: E731
    return {
        "version": 1, "category": "voyeur", "language": "en",
        "known_urls": [f"https://example.net/{hexes(12)}"], "contact": {"email": f"{hexes(10)}@example.org"},
        "consent": {"takedown": True, "hotline": True, "share_hashes": False, "at": "2026-05-01"},
        "signals": [
            {"type": "pdq", "hash": hexes(64), "quality": 90, "item": "p1" + item_suffix, "variant": "full"},
            {"type": "sha256", "hash": hexes(64), "item": "p1" + item_suffix},
            {"type": "md5", "hash": hexes(32), "item": "p1" + item_suffix},
            {"type": "vpdq", "frames": [[0, 80, hexes(64)], [1, 81, hexes(64)]], "item": "v1" + item_suffix},
            {"type": "face", "descriptor": [round(rng.uniform(-0.3, 0.3), 9) for _ in range(128)],
             "item": "s1" + item_suffix}],
        "items": [{"item": "p1" + item_suffix, "kind": "photo", "label": f"label-{hexes(12)}"},
                  {"item": "v1" + item_suffix, "kind": "video", "label": "video 1"},
                  {"item": "s1" + item_suffix, "kind": "selfie", "label": "selfie 1"}],
    }


def needles(p) -> set[str]:
    out = set()
    for s in p["signals"]:
        if "hash" in s:
            out.add(s["hash"])
        if s["type"] == "vpdq":
            out.update(f[2] for f in s["frames"])
        if s["type"] == "face":
            out.update(repr(x) for x in s["descriptor"] if len(repr(x)) >= 9)
    out.update(p["known_urls"])
    out.add(p["contact"]["email"])
    out.update(i["label"] for i in p["items"] if i["label"].startswith("label-"))
    return out


def sealed(portal, p):
    key_id, public = portal.staff.public_key()
    return {"key_id": key_id, "sealed": b64(seal(unb64(public), json.dumps(p).encode()))}


def files_under(*folders) -> bytes:
    out = []
    for folder in folders:
        if folder.exists():
            out += [p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()]
    return b"\n".join(out)


def test_nothing_identifying_is_stored(portal):
    rng = random.Random(20260501)
    first, second = payload(rng), payload(rng, "-x")
    status, headers, body = call(portal, "POST", "/api/v1/cases", sealed(portal, first))
    assert status == 201 and "Set-Cookie" not in headers
    made = json.loads(body)
    number, passphrase = made["case_number"], made["passphrase"]

    conn = redis.Redis.from_url(REDIS_URL)
    from rq import Queue
    jobs = Queue("default", connection=conn).jobs
    # The job's name and the submission's internal id, nothing else.
    assert [(j.func_name, j.args[:1], type(j.args[1]), len(j.args), j.kwargs) for j in jobs] == \
        [(*rq_form("take_in"), int, 2, {})]

    assert call(portal, "GET", f"/api/v1/cases/{number}/status", passphrase=passphrase)[0] == 200
    assert call(portal, "GET", f"/api/v1/cases/{number}/status", passphrase="wrong-words")[0] == 401
    assert call(portal, "POST", f"/api/v1/cases/{number}/signals", sealed(portal, second), passphrase)[0] == 202
    before_take_in = redis_dump(conn)
    portal.run_worker()
    status, headers, body = call(portal, "GET", f"/api/v1/cases/{number}/status", passphrase=passphrase)
    assert status == 200 and len(json.loads(body)["items"]) == 6 and "Set-Cookie" not in headers

    # The signals are there, encrypted: the staff side reads them back.
    from workers.cases.decrypt import case_details, case_signals, item_labels
    with portal.staff.session() as s:
        from sqlalchemy import select

        from store.models import Case
        case_id = s.execute(select(Case.id)).scalar()
    assert len(case_signals(portal.staff, case_id)) == 10
    assert case_details(portal.staff, case_id)["contact"] == second["contact"]
    assert item_labels(portal.staff, case_id)["p1"] == first["items"][0]["label"]

    settings = portal.settings
    portal._handler.flush()
    haystacks = {
        "database": b"\n".join(p.read_bytes() for p in settings.instance.glob("kesu.db*")),
        "keystore": files_under(settings.keystore_dir),
        "blobs": files_under(settings.blob_dir),
        "logs": files_under(settings.log_dir),
        "redis": before_take_in + b"\n" + redis_dump(conn),
    }
    from store.cases import number_key
    assert number_key(portal.staff.pepper, number).encode() in haystacks["database"]   # the scan reads real rows
    assert b"take_in" in haystacks["redis"] and b"/api/v1/cases/<number>/status" in haystacks["logs"]
    wanted = needles(first) | needles(second) | {number, passphrase, UA, IP}
    wanted |= {passphrase.replace("-", " "), number[:6] + " " + number[6:]}
    for where, hay in haystacks.items():
        text = hay.decode("latin-1")
        for value in wanted:
            assert value not in text, f"{value[:20]}… found in {where}"


def test_browser_keeps_nothing_and_exit_replaces(portal, static_server):
    portal.settings.extra["exit_url_en"] = static_server + "/harness/smoke.html"
    d = make_chromium(390, 844, performance_log=True)
    try:
        d.get(portal.url + "/?lang=en")
        wait_for(d, "document.documentElement.classList.contains('js')", 20)
        first_entries = d.execute_script("return history.length")   # the front page (and the blank tab)
        # Front page -> status page -> Japanese -> English: all replace the one history entry.
        d.find_element(By.CSS_SELECTOR, "a[href$='/status'][data-replace]").click()
        wait_for(d, "location.pathname === '/status' && document.documentElement.classList.contains('js')", 20)
        d.find_element(By.CSS_SELECTOR, "a[lang='ja'][data-replace]").click()
        wait_for(d, "document.documentElement.lang === 'ja' && document.documentElement.classList.contains('js')", 20)
        d.find_element(By.ID, "case-number").send_keys("123456789012")
        d.find_element(By.ID, "passphrase").send_keys("not-the-right-one")
        d.find_element(By.ID, "check").click()
        wait_for(d, "document.querySelector('#status').classList.contains('error')", 30)
        state = d.execute_async_script("""
            const done = arguments[0];
            (async () => ({
              cookie: document.cookie, local: localStorage.length, session: sessionStorage.length,
              history: history.length,
              idb: indexedDB.databases ? (await indexedDB.databases()).length : 0,
              caches: (await caches.keys()).length,
              sw: navigator.serviceWorker ? (await navigator.serviceWorker.getRegistrations()).length : 0,
            }))().then(done, e => done({error: String(e)}));""")
        assert state == {"cookie": "", "local": 0, "session": 0, "history": first_entries, "idb": 0, "caches": 0,
                         "sw": 0}
        origin = urlsplit(portal.url).netloc
        for entry in d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                u = urlsplit(msg["params"]["request"]["url"])
                assert u.scheme in ("data", "blob") or u.netloc == origin, u.geturl()
        # Quick exit: the neutral page replaces ours; Back would not bring it back.
        d.get(portal.url + "/?lang=en")
        wait_for(d, "document.documentElement.classList.contains('js')", 20)
        before = d.execute_script("return history.length")
        d.find_element(By.ID, "exit").click()
        wait_for(d, "location.pathname === '/harness/smoke.html'", 20)
        assert d.execute_script("return history.length") == before
    finally:
        d.quit()
        portal.settings.extra.pop("exit_url_en", None)


def test_intake_never_loads_code_that_decrypts():
    import subprocess
    import sys
    code = ("import sys; from intake import create_app; from store.config import load; "
            "from store.instance import Instance; import tempfile; "
            "create_app(Instance(load(tempfile.mkdtemp()))); "
            "print(','.join(m for m in ('workers.cases.takein', 'backoffice') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    loaded = out.stdout.strip().split(",") if out.stdout.strip() else []
    assert "workers.cases.takein" not in loaded and "backoffice" not in loaded


def test_forms_name_no_control_so_a_native_submit_puts_nothing_in_a_url(portal):
    # Before (or without) the page script, Enter in a field submits the form natively: with
    # named controls, the passphrase or file names would land in the URL and its history.
    for path in ("/", "/status"):
        status, _, html = call(portal, "GET", path)
        assert status == 200 and b"<form" in html
        assert not re.findall(rb"<(?:input|select|textarea|button)\b[^>]*\sname=", html), path
