"""Errors on intake pages keep the quick exit and a person to reach; the API keeps answering JSON."""
import pytest

from intake import create_app


@pytest.fixture
def client(instance):
    instance.settings.org_name, instance.settings.org_phone = "Support Centre", "03-0000-0000"
    app = create_app(instance)
    app.add_url_rule("/boom", "boom", lambda: 1 / 0)
    app.testing = False                       # errors go to the handlers, as in production
    return app.test_client()


@pytest.mark.parametrize("path, code", [("/no-such-page", 404), ("/boom", 500)])
@pytest.mark.parametrize("lang, person", [("ja", "人に相談する"), ("en", "Talk to a person")])
def test_an_error_page_keeps_the_exit_and_a_person(client, path, code, lang, person):
    r = client.get(f"{path}?lang={lang}")
    html = r.get_data(as_text=True)
    assert r.status_code == code and r.mimetype == "text/html"
    assert 'id="exit"' in html and person in html and "03-0000-0000" in html and "Support Centre" in html
    assert "#8891" in html                    # national help lines, both languages
    assert "ZeroDivisionError" not in html


def test_the_api_still_answers_json(client):
    r = client.get("/api/v1/no-such-route")
    assert r.status_code == 404 and r.is_json and r.get_json()["error"] == "not_found"


def test_help_lines_carry_their_source_and_an_instance_may_replace_them(instance):
    from intake.helplines import HELPLINES
    for lines in HELPLINES.values():
        assert lines and all(line["source"].startswith("https://") and line["checked"] and "review" in line["review"]
                             for line in lines)
    client = create_app(instance).test_client()
    assert "#8891" in client.get("/?lang=ja").get_data(as_text=True)
    instance.settings.extra["helplines_ja"] = '[{"name": "地域の相談窓口", "phone": "0120-000-000"}]'
    html = client.get("/?lang=ja").get_data(as_text=True)
    assert "地域の相談窓口" in html and "0120-000-000" in html and "#8891" not in html
    instance.settings.extra["helplines_ja"] = "[]"
    assert "ほかの相談窓口" not in client.get("/?lang=ja").get_data(as_text=True)
