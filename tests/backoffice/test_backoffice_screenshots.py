"""Every back-office page, in Japanese, at 1440x900 (a laptop) and 390x844 (a phone), in real
Chromium: it shows the back office's layout in Japanese, and nothing is wider than the phone's
screen except inside a table's own scroll area. With KESU_UPDATE_SCREENSHOTS=1 both sizes are
shot into docs/screenshots/backoffice-*-{laptop,phone}-ja.png (else only the phone, to a temporary folder).

The data is generated: pictures are coloured rectangles, sites are .example names."""
import io
import os
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from conftest import make_instance, serve_app, wait_for
from PIL import Image
from selenium.webdriver.common.by import By
from takedown_helpers import make_domain
from test_match import jpeg, new_case, picture, registered_signals
from test_review_browser import kept_media

from store.models import Domain, PatrolRun, Takedown, TakedownEvent, utcnow
from workers.matching import matcher as match
from workers.system import context

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ORG = dict(org_name="NPO 例", org_email="help@example.org", org_phone="03-0000-0000",
           org_address="東京都千代田区例町1-2-3", org_responsible="山田 花子")
EMAIL, PASSWORD = "admin@example.org", "a long admin password 42"
SIZES = {"laptop": (1440, 900), "phone": (390, 844)}

# Overflow past the phone's width that is wrapped in .table-wrap scrolls inside it; anything else is a defect.
OVERFLOW_JS = """
const w = document.documentElement.clientWidth;
const bad = [];
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('.table-wrap, pre, textarea, canvas')) continue;
  const r = el.getBoundingClientRect();
  if (r.width && r.right > w + 1) bad.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' ' + Math.round(r.right));
}
return bad.slice(0, 5);"""


@pytest.fixture
def office(tmp_path):
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'instance' / 'kesu.db'}", **ORG)
    from backoffice import accounts, create_app, review
    from workers.takedown import notify
    secret = accounts.add(inst, EMAIL, PASSWORD, "admin")
    match.reset()
    context.set_instance(inst)
    dom = make_domain(inst, "bad.example", site_name="例 動画サイト",
                      contacts={"host": {"email": "abuse@hosting.example", "name": "Example Hosting"}})
    pics = [picture(31 + i) for i in range(3)]
    cases = [new_case(inst, registered_signals(p, jpeg(p))) for p in pics]
    media = [kept_media(inst, f"http://bad.example/watch/{i}", f"http://cdn.bad.example/{i}.jpg", jpeg(p))
             for i, p in enumerate(pics)]
    for m in media:
        assert match.match_stored_media(inst, m)
    done = review.decide(inst, "staff:1", 1, [(cases[0], media[0]), (cases[1], media[1])], "confirm")
    td = done["takedowns"][0]
    nid = notify.prepare(inst, td, "host", "ja", actor="staff:1", address="")
    notify.mark_sent(inst, nid, actor="staff:1")
    with inst.session() as s:
        s.add(TakedownEvent(takedown_id=td, kind="check", actor="worker",
                            detail={"outcome": "still_up", "http": 404, "status": "requested",
                                    "why": "page answers 404; matched media still served"}))
        s.get(Takedown, done["takedowns"][1]).status = "removed"
        now = utcnow()
        for day in range(3):
            s.add(PatrolRun(domain_id=dom, started_at=now - timedelta(days=day), finished_at=now, status="ok",
                            pages=4 + day, media=12, matches=day % 2, bytes=3_000_000, seconds=21.0, detail={}))
        s.get(Domain, dom).patrol_seeds = ["http://bad.example/new"]
    url, stop = serve_app(create_app(inst))
    yield {"url": url, "inst": inst, "secret": secret, "td": td, "nid": nid, "case": cases[0], "domain": dom}
    stop()
    match.reset()


def test_every_backoffice_page_in_japanese_on_a_laptop_and_a_phone(chromium, office, tmp_path):
    base, td = office["url"], office["td"]
    pages = {
        "overview": "/", "review": "/review/", "takedowns": "/takedowns/", "takedown": f"/takedowns/{td}",
        "notice": f"/takedowns/{td}/notices/{office['nid']}", "cases": "/cases/", "case": f"/cases/{office['case']}",
        "manual": "/manual/", "manual-case": f"/manual/cases/{office['case']}", "domains": "/domains/",
        "domain": f"/domains/{office['domain']}", "domains-import": "/domains/import", "patrol": "/patrol/",
        "patrol-domain": f"/patrol/domains/{office['domain']}", "stats": "/stats/", "admin": "/admin/",
        "admin-staff": "/admin/staff", "admin-health": "/admin/health", "error-404": "/takedowns/999999",
    }
    update = bool(os.environ.get("KESU_UPDATE_SCREENSHOTS"))
    out = (ROOT / "docs" / "screenshots") if update else tmp_path
    sizes = SIZES if update else {"phone": SIZES["phone"]}     # the phone is where layouts break; laptop shots on request
    driver = chromium
    driver.delete_all_cookies()
    driver.get(base + "/login?lang=ja")
    driver.find_element(By.ID, "email").send_keys(EMAIL)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "code").send_keys(pyotp.TOTP(office["secret"]).now())
    driver.find_element(By.ID, "login").click()
    wait_for(driver, "!!document.getElementById('welcome')")
    problems = []
    try:
        for size, (w, h) in sizes.items():
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": size == "phone"})
            for name, path in pages.items():
                driver.get(base + path + ("&" if "?" in path else "?") + "lang=ja")
                wait_for(driver, "document.readyState === 'complete'")
                if name in ("stats", "patrol"):
                    wait_for(driver, "document.body.dataset.chartsReady === '1'", timeout=30)
                assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ja", name
                assert driver.find_elements(By.CSS_SELECTOR, "header.topbar"), name
                if size == "phone":
                    wide = driver.execute_script(OVERFLOW_JS)
                    if wide:
                        problems.append((name, wide))
                png = driver.get_screenshot_as_png()
                img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
                img.save(out / f"backoffice-{name}-{size}-ja.png", optimize=True)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert not problems, problems
