"""Finding her by her face in photos she never had, end to end: real Chromium, real matcher.

Two victims register through the intake page in headless Chromium: one with three selfies,
one who holds no images (#no-images opens #source-photos: ordinary photos of herself). A
crawled page (the real crawler, Chromium, dlib) shows a *different* photo of the first, a
photo of someone else, and a simulated deepfake edit of the second one's ordinary photo.
The matcher built from the database finds the first in her other photo and nobody in the
stranger's, finds the second in the edit by her face (and by the top third of her photo, which
the edit kept), and the review queue lists each case's
face candidates best first, with the plain reason and "found by a source photo".

Photos: ../shared/data/faces-verification (labelled public figures; skipped where absent).
"""
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_app, wait_for
from intake_harness import open_portal, run_axe
from PIL import Image, ImageDraw
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import select
from test_intake_browser import click, review
from test_review_browser import EMAIL, PASSWORD, log_in

from store.models import Case, Item, Match, Media
from workers.matching import matcher as match
from workers.system import context

pytestmark = pytest.mark.browser

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "faces-verification"
SELFIES = ("img1.jpg", "img2.jpg", "img10.jpg")          # one woman, three different photos
HER_OTHER_PHOTO = "img6.jpg"                             # the same woman, a photo not registered
SOMEONE_ELSE = "img13.jpg"                               # another person
SOURCE_PHOTOS = ("img26.jpg", "img27.jpg")               # the second victim's ordinary photos
CRAWL = dict(crawl_allow_private=True, crawl_delay=0, crawl_page_seconds=30, crawl_idle_seconds=0.8)


def deepfake_edit(path: Path, share: float = 0.4) -> bytes:
    """A simulated edit: the bottom `share` of the picture (below her face) repainted with other
    content, her head and the background above kept; re-encoded as a site would."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    top = int(h * (1 - share))
    d = ImageDraw.Draw(im)
    rng = np.random.default_rng(5)
    d.rectangle([0, top, w, h], fill=(150, 120, 110))
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(top, h))
        d.ellipse([x, y, x + int(rng.integers(30, 200)), y + int(rng.integers(30, 200))],
                  fill=tuple(int(v) for v in rng.integers(60, 230, 3)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def register(d, portal, *, selfies=(), sources=()):
    d.get(portal.url + "/?lang=en")
    wait_for(d, "document.documentElement.classList.contains('js')", 20)
    Select(d.find_element(By.ID, "category")).select_by_value("deepfake")
    if selfies:
        d.find_element(By.ID, "selfies").send_keys("\n".join(str(DATA / f) for f in selfies))
    if sources:
        assert not d.find_element(By.ID, "source-photos").is_displayed()
        click(d, d.find_element(By.ID, "no-images"))
        wait_for(d, "!document.querySelector('#source-photos-area').hidden")
        assert d.find_element(By.ID, "no-images").get_attribute("aria-expanded") == "true"
        assert run_axe(d) == []
        d.find_element(By.ID, "source-photos").send_keys("\n".join(str(DATA / f) for f in sources))
    click(d, d.find_element(By.ID, "consent-faces"))
    click(d, d.find_element(By.ID, "consent-takedown"))
    payload = review(d)
    click(d, d.find_element(By.ID, "submit"))
    wait_for(d, "document.querySelector('#case-number').textContent.length > 0", 60)
    portal.run_worker()
    return payload


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/faces-verification is absent")
def test_selfies_and_source_photos_find_her_in_other_photos(tmp_path, chromium):
    from sites import serve_site

    from backoffice import accounts, create_app
    from workers.capture.crawl import crawl, create_job

    with open_portal(tmp_path / "portal", **CRAWL) as portal:
        d = chromium
        first = register(d, portal, selfies=SELFIES)
        assert [(i["item"], i["kind"]) for i in first["items"]] == [("s1", "selfie"), ("s2", "selfie"), ("s3", "selfie")]
        assert sorted(s["type"] for s in first["signals"]) == ["face"] * 3
        second = register(d, portal, sources=SOURCE_PHOTOS)
        assert [(i["item"], i["kind"]) for i in second["items"]] == [("o1", "source"), ("o2", "source")]
        for item in ("o1", "o2"):                  # her face and the photo's PDQ, nothing else
            assert {s["type"] for s in second["signals"] if s["item"] == item} == {"face", "pdq"}
        instance = portal.staff
        with instance.session() as s:
            (a, _), (b, _) = s.execute(select(Case.id, Case.category).order_by(Case.id)).all()
            kinds = dict(s.execute(select(Item.item, Item.kind).where(Item.case_id == b)).all())
        assert kinds == {"o1": "source", "o2": "source"}

        # The matcher, built from the database; its cohort already holds strangers' faces
        # (as a crawl that has run a while has seen), so face candidates carry their rank.
        match.reset()
        context.set_instance(instance)
        strangers = np.random.default_rng(3).normal(0, 0.09, (400, 128)).astype(np.float32)
        match.matcher(instance).cohort.add(strangers)

        site = tmp_path / "site"
        site.mkdir()
        (site / "her.jpg").write_bytes((DATA / HER_OTHER_PHOTO).read_bytes())
        (site / "other.jpg").write_bytes((DATA / SOMEONE_ELSE).read_bytes())
        (site / "edited.jpg").write_bytes(deepfake_edit(DATA / SOURCE_PHOTOS[0]))
        (site / "page.html").write_text("<!doctype html><title>gallery</title>"
                                        + "".join(f'<img src="{n}" width="200">' for n in ("other.jpg", "her.jpg", "edited.jpg")))
        base, stop = serve_site(site)
        try:
            crawl(instance, create_job(instance, f"{base}/page.html", depth=0))
        finally:
            stop()

        with instance.session() as s:
            found = {(m.case_id, med.url.rsplit("/", 1)[1], m.kind): m for m, med in
                     s.execute(select(Match, Media).join(Media, Media.id == Match.media_id)).all()}
        faces = {(c, name) for c, name, kind in found if kind == "face"}
        assert (a, "her.jpg") in faces                      # a different photo of her
        assert (b, "edited.jpg") in faces                   # the edit of her ordinary photo
        assert not {k for k in found if k[1] == "other.jpg"}, "someone else's photo matched"
        assert faces == {(a, "her.jpg"), (b, "edited.jpg")}
        her = found[(a, "her.jpg", "face")]
        assert her.distance < 0.52 and her.evidence["face_closer"] == 1.0 and her.evidence["cohort"] >= 400
        assert found[(b, "edited.jpg", "face")].evidence["item"] in ("o1", "o2")
        # and by the top third of her photo, hashed in her browser: the edit kept it
        top = found[(b, "edited.jpg", "pdq")]
        assert top.evidence["variant"] == top.evidence["query_variant"] == "top-third" and top.distance <= 31
        assert not any(k == "pdq" and c == b and name != "edited.jpg" for c, name, k in found)

        # The review queue: each case's face candidates best first, with the plain reason; the
        # edit labelled as found by face through a source photo.
        secret = accounts.add(instance, EMAIL, PASSWORD, "staff")
        url, stop_app = serve_app(create_app(instance))
        try:
            log_in(d, url, secret)
            d.get(f"{url}/review/?lang=en&case={a}")
            wait_for(d, "document.documentElement.dataset.reviewReady === '1'")
            rows = d.find_elements(By.CSS_SELECTOR, "tr.review-row")
            assert rows and "her.jpg" in rows[0].text
            assert "closer than all" in rows[0].text and "other faces seen" in rows[0].text
            assert "found by her selfie" in rows[0].text
            d.get(f"{url}/review/?lang=en&case={b}")
            wait_for(d, "document.documentElement.dataset.reviewReady === '1'")
            rows = d.find_elements(By.CSS_SELECTOR, "tr.review-row")
            text = rows[0].text
            assert "edited.jpg" in text and "face:" in text and "found by a source photo" in text
        finally:
            stop_app()
            match.reset()
