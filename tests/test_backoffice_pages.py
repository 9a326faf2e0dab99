"""Back-office pages that read at a glance: error pages in the layout and the reader's language."""
from conftest import make_instance, staff_client


def test_error_pages_have_the_layout_and_speak_japanese(tmp_path):
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}")
    client = staff_client(inst, role="lawyer", address="lawyer@example.org")
    r = client.get("/review/?lang=ja")
    page = r.get_data(as_text=True)
    assert r.status_code == 403 and 'class="topbar"' in page and "この役割では開けません" in page
    assert "backoffice.css" in page and '<html lang="ja">' in page
    r = client.get("/takedowns/999999")
    assert r.status_code == 404 and "見つかりません" in r.get_data(as_text=True)   # the language stays chosen
    r = client.get("/takedowns/999999?lang=en")
    assert r.status_code == 404 and "Not found" in r.get_data(as_text=True)

    from backoffice import create_app
    app = create_app(inst)
    app.add_url_rule("/boom", "boom", lambda: 1 / 0)     # a page that fails, seen as staff see it
    app.config["PROPAGATE_EXCEPTIONS"] = False
    r = app.test_client().get("/boom?lang=ja")
    page = r.get_data(as_text=True)
    assert r.status_code == 500 and "うまくいきませんでした" in page and 'class="topbar"' in page
    assert "ZeroDivisionError" not in page


def test_a_pdq_match_is_said_in_words(tmp_path):
    """"same picture, flipped", not "pdq: 4 bits (flipy / full)"."""
    from backoffice import create_app
    from backoffice.review import pdq_reason
    app = create_app(make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}"))
    with app.test_request_context("/?lang=en"):
        assert pdq_reason(4, {"query_variant": "flipy", "variant": "full"}) == "same picture, flipped"
        assert pdq_reason(0, {"query_variant": "orig", "variant": "trimmed"}) == "same picture, its border cut off"
        assert pdq_reason(27, {"query_variant": "rot180", "variant": "crop-16:9"}) == \
            "similar picture (look closely), turned upside down, cropped to 16:9"
    with app.test_request_context("/?lang=ja"):
        assert pdq_reason(4, {"query_variant": "flipy", "variant": "full"}) == "同じ画像、左右反転"


def test_health_never_says_nothing_needs_attention_without_a_backup():
    from datetime import timedelta

    from store.models import utcnow
    from workers.system.health import problem_codes
    base = {"queue": {"reachable": True, "workers": [{"stale": False}], "queues": [], "failed": []},
            "disk": {}, "database_ok": True}
    assert {"code": "no_backup"} in problem_codes({**base, "last_backup": None})
    old = (utcnow() - timedelta(days=30)).isoformat(timespec="seconds") + "Z"
    assert problem_codes({**base, "last_backup": old})[0]["code"] == "backup_old"
    fresh = utcnow().isoformat(timespec="seconds") + "Z"
    assert problem_codes({**base, "last_backup": fresh}) == []
    assert problem_codes({**base, "last_backup": fresh, "notice_settings_missing": ["org_address"]}) == [
        {"code": "notice_settings", "names": "org_address"}]
