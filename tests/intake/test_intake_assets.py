"""Fast, honest downloads: static files under a versioned path, cached for a year and
compressed; pages and the API never cached, and the API never compressed."""
import re
import zlib

import brotli

from intake import create_app

ROOT_STATIC = "intake/static"


def test_static_files_are_versioned_cached_and_compressed(instance):
    app = create_app(instance)
    client = app.test_client()
    page = client.get("/", headers={"Accept-Encoding": "br, gzip"})
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Content-Encoding"] == "br"
    html = brotli.decompress(page.data).decode()
    version = app.config["KESU_ASSET_VERSION"]
    script = re.search(r'src="(/static/[^"]+/js/intake\.js)"', html).group(1)
    assert script == f"/static/{version}/js/intake.js"
    assert re.search(rf'href="/shared/{version}/css/kesu\.css"', html)

    r = client.get(script, headers={"Accept-Encoding": "br, gzip"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.headers["Content-Encoding"] == "br" and "Accept-Encoding" in r.headers["Vary"]
    original = open(f"{ROOT_STATIC}/js/intake.js", "rb").read()
    body = brotli.decompress(r.get_data())
    assert body == original and len(r.get_data()) < len(original) / 2

    # Files are streamed: a browser without brotli (plain http) gets deflate.
    other = client.get(script, headers={"Accept-Encoding": "gzip, deflate"})
    assert other.headers["Content-Encoding"] == "deflate" and zlib.decompress(other.get_data()) == original
    # The plain path serves the same file, revalidated each time (old links, harnesses).
    plain = client.get("/static/js/intake.js")
    assert plain.headers["Cache-Control"] == "no-cache" and plain.get_data() == original


def test_the_api_is_neither_cached_nor_compressed(instance):
    client = create_app(instance).test_client()
    r = client.get("/api/v1/key", headers={"Accept-Encoding": "br, gzip"})
    assert r.headers["Cache-Control"] == "no-store" and "Content-Encoding" not in r.headers
    missing = client.get("/static/nothing-here.js")
    assert missing.status_code == 404 and missing.headers["Cache-Control"] == "no-store"


def test_a_changed_file_gets_a_new_version(tmp_path):
    from web import asset_version
    (tmp_path / "a.js").write_text("one")
    before = asset_version(tmp_path)
    (tmp_path / "a.js").write_text("two!")
    assert asset_version(tmp_path) != before
