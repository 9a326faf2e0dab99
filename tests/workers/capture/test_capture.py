"""workers.capture.page on a generated fixture site with real headless Chromium (no mocks)."""
import hashlib
import io
import time
import urllib.request

import pytest
from PIL import Image
from sites import DATA_GIF, EXPECTED, build_site, serve_site

from workers.capture import page as cap

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    hashes = build_site(folder)
    base, stop = serve_site(folder)
    yield base, hashes
    stop()


@pytest.fixture(scope="module")
def browser():
    driver = cap.open_browser()
    yield driver
    driver.quit()


def limits(**kw):
    base = dict(page_seconds=20, page_bytes=32 << 20, idle_seconds=0.8)
    base.update(kw)
    return cap.Limits(**base)


def _by_url(result):
    return {m["url"]: m for m in result.media}


def _assert_expected(result, page, base, hashes):
    media = _by_url(result)
    for path in EXPECTED[page]:
        host = base.replace("127.0.0.1", "localhost") if path == "img/f.png" else base
        url = f"{host}/{path}"
        assert url in media, f"{url} not captured; got {sorted(media)}"
        assert media[url]["sha256"] == hashes[path], url
        assert media[url]["bytes"] == len(media[url]["body"])
        assert hashlib.sha256(media[url]["body"]).hexdigest() == hashes[path]


def test_gallery_every_media_with_the_served_hash(site, browser):
    base, hashes = site
    r = cap.capture(f"{base}/gallery.html", driver=browser, limits=limits(), allow_private=True)
    assert (r.status, r.error, r.http_status) == ("ok", None, 200)
    assert r.server_ip == "127.0.0.1"
    assert r.captured_at.tzinfo is not None
    # lazy images 5000 and 9000 px below the fold, srcset, <picture>, CSS backgrounds, the
    # cross-site iframe's image and the image a script adds after 600 ms
    _assert_expected(r, "gallery.html", base, hashes)
    # the 2x srcset candidate and the <picture> fallback were not loaded by a 1x browser
    assert f"{base}/img/s2.png" not in _by_url(r)
    # the data: image: URL cut to 64 characters, hash of the decoded bytes
    data = [m for m in r.media if m["url"].startswith("data:")]
    assert len(data) == 1 and data[0]["url"] == DATA_GIF[:64]
    assert data[0]["sha256"] == hashlib.sha256(cap.decode_data_url(DATA_GIF)[1]).hexdigest()
    # HTML as served, MHTML snapshot, full-page screenshot with the time band
    with urllib.request.urlopen(f"{base}/gallery.html") as resp:
        assert r.html == resp.read()
    assert b"multipart/related" in r.mhtml[:2000]
    shot = Image.open(io.BytesIO(r.screenshot))
    assert shot.height > 9000 and shot.width >= 1000
    band = shot.crop((0, 0, shot.width, 28)).convert("RGB")
    assert len(band.getcolors(maxcolors=1 << 16)) > 2          # text was drawn on the band


def test_a_direct_media_url_is_captured_as_media_not_as_page_source(site, browser):
    # A reported URL is often the image itself: its bytes are media, and their hash must not
    # be stored in the clear as the page source's.
    base, hashes = site
    r = cap.capture(f"{base}/img/a.png", driver=browser, limits=limits(), allow_private=True)
    assert r.status == "ok" and hashes["img/a.png"] in {m["sha256"] for m in r.media}
    assert r.html_source == "dom" and hashlib.sha256(r.html or b"").hexdigest() != hashes["img/a.png"]


def test_progressive_video_and_hls_segments(site, browser):
    base, hashes = site
    r = cap.capture(f"{base}/video.html", driver=browser, limits=limits(), allow_private=True)
    assert r.status == "ok"
    _assert_expected(r, "video.html", base, hashes)
    r = cap.capture(f"{base}/hls.html", driver=browser, limits=limits(), allow_private=True)
    assert r.status == "ok"
    # the player loaded the playlist and the first segment; the rest were fetched whole, raw
    _assert_expected(r, "hls.html", base, hashes)
    sources = {m["url"].rsplit("/", 1)[1]: m["source"] for m in r.media}
    assert sources["seg000.ts"] == "browser" and sources["seg002.ts"] == "fetched"
    assert _by_url(r)[f"{base}/media/hls/index.m3u8"]["mime"] == "application/vnd.apple.mpegurl"


def test_redirect_chain_and_links(site, browser):
    base, hashes = site
    r = cap.capture(f"{base}/redirect/1", driver=browser, limits=limits(), allow_private=True)
    assert r.status == "ok" and r.final_url == f"{base}/landing.html"
    assert [(h["url"], h["status"]) for h in r.redirects] == [
        (f"{base}/redirect/1", 302), (f"{base}/redirect/2", 301), (f"{base}/redirect/3", 302)]
    r = cap.capture(f"{base}/index.html", driver=browser, limits=limits(), allow_private=True)
    _assert_expected(r, "index.html", base, hashes)
    # javascript:, data: and mailto: links are never followed; fragments are dropped
    assert r.links == [f"{base}/gallery.html", f"{base}/video.html", f"{base}/hls.html",
                       "http://example.invalid/elsewhere"]


HOSTILE = [
    # page, status, error contains, limit hit
    ("loop/a", "error", "redirect loop", None),
    ("notfound", "error", "HTTP 404", None),
    ("scroll.html", "limit", "scroll", "scroll"),
    ("hang", "limit", "time", "time"),
    ("hangimg.html", "limit", "time", "time"),
    ("huge.html", "limit", "bytes", "bytes"),
    ("broken.html", "ok", None, None),
]


@pytest.mark.parametrize("page,status,error,hit", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_pages_end_within_limits(site, browser, page, status, error, hit):
    base, hashes = site
    lim = limits(page_seconds=5, page_bytes=4 << 20, max_scrolls=12)
    t0 = time.monotonic()
    r = cap.capture(f"{base}/{page}", driver=browser, limits=lim, allow_private=True)
    took = time.monotonic() - t0
    assert took < lim.page_seconds + 8, took
    assert r.status == status, (r.status, r.error, r.limits_hit)
    if error:
        assert error in r.error
    else:
        assert r.error is None
    if hit:
        assert hit in r.limits_hit
    media = _by_url(r)
    if page == "hangimg.html":
        # what finished is kept
        assert media[f"{base}/img/hang-ok.png"]["sha256"] == hashes["img/hang-ok.png"]
        assert r.screenshot and r.html
    if page == "hang":
        assert r.http_status == 200 and b"never finishes" in r.html and r.html_source == "dom"
    if page == "broken.html":
        # broken images are media too, with the hash of the bytes served
        assert media[f"{base}/img/garbage.png"]["sha256"] == hashes["img/garbage.png"]
        assert media[f"{base}/img/truncated.png"]["sha256"] == hashes["img/truncated.png"]
        assert f"{base}/img/missing.png" not in media
        assert r.links == [f"{base}/broken.html"]
    if page == "loop/a":
        assert len(r.redirects) >= 10 and r.media == [] and r.screenshot is None
    # the browser is still usable after a hostile page
    assert browser.execute_script("return 1 + 1") == 2


def test_private_addresses_refused(site, browser):
    base, _ = site
    r = cap.capture(f"{base}/index.html", driver=browser, limits=limits(), allow_private=False)
    assert r.status == "error" and r.error.startswith("refused") and r.media == []
    for url in ("javascript:alert(1)", "data:text/html,hi", "file:///etc/passwd"):
        assert cap.capture(url, driver=browser, allow_private=True).status == "error"
    # the address policy itself: tests/workers/net/test_net_guard.py; every kind of request: tests/workers/capture/test_capture_guard.py
