"""Legal regimes as data (regimes/*.toml): every regime's notice in Japanese and English carries
each field it requires; a missing field refuses the notice naming it; bad files are clear errors;
the hash list goes with her consent; the domain CSV carries the regime flags."""
import email
import email.policy
import hashlib
import io
import json

import pytest
from sqlalchemy import select
from takedown_helpers import ORG, make_case, make_domain, make_takedown, org_instance, render

from store.models import Domain, Notice
from workers.takedown import notify, regimes


@pytest.fixture
def inst(tmp_path):
    return org_instance(tmp_path)


def _domain_for(inst, regime, name):
    country = next((c for c in regime.coverage.countries if c != "*"), "JP")
    flags = {regime.coverage.domain_flag: True} if regime.coverage.domain_flag else {}
    return make_domain(inst, name, country=country, **flags)


# What each field must show in the text, beside its label: the values it carries.
def _values(field, lang, url):
    return {"location": [url], "signature": [ORG["org_responsible"], "2026-11-01"],
            "contact": [ORG["org_address"], ORG["org_email"]], "notifier": [ORG["org_responsible"], ORG["org_email"]],
            "good_faith": ["誠実に信じて" if lang == "ja" else "belief"]}.get(field, [])


def test_every_regime_renders_in_japanese_and_english_with_each_required_field(inst):
    notice_regimes = [r for r in regimes.regimes().values() if r.notice]
    assert {r.id for r in notice_regimes} >= {"us_take_it_down", "jp_platform_act", "jp_revenge_porn_art4",
                                              "eu_dsa_art16", "uk_online_safety"}
    strongest_seen = set()
    for i, regime in enumerate(notice_regimes):
        dom = _domain_for(inst, regime, f"site{i}.example")
        for category in regime.coverage.categories:
            case = make_case(inst, category=category, contact="victim.secret@example.net")
            url = f"https://site{i}.example/{category}/1"
            td = make_takedown(inst, case, dom, url)
            for lang in ("ja", "en"):
                r = render(inst, td, "site", lang)
                assert regime.id in r.regimes, (regime.id, category)
                assert regime.law.get(lang) in r.body, (regime.id, lang)      # cited, or named beside it
                if r.regime != regime.id:
                    continue
                strongest_seen.add(regime.id)
                for field in regime.fields:
                    assert regimes.FIELDS[field][lang] in r.body, (regime.id, lang, field)
                    for value in _values(field, lang, url):
                        assert value in r.body, (regime.id, lang, field, value)
                assert "victim.secret" not in r.body
                assert "{{" not in r.body and "{%" not in r.body
    assert strongest_seen == {r.id for r in notice_regimes}          # each one's own notice was checked
    # the strongest is cited first: a duty to remove in 48 hours over an inquiry period of 2 days
    dom = make_domain(inst, "covered.example", take_it_down=True, designated=True)
    td = make_takedown(inst, make_case(inst, contact=""), dom, "https://covered.example/v/1")
    r = render(inst, td, "site", "en")
    assert r.regime == "us_take_it_down" and r.regimes[1:] == ("jp_platform_act", "jp_revenge_porn_art4")
    assert "Also applicable:" in r.body and "Legal deadline:" in r.body and "UTC" in r.body
    # TAKE IT DOWN's signature block: who signs, in which capacity, on what basis
    assert "/Hanako Example/ (electronic signature), authorised representative of the person depicted" in r.body
    assert "consented at our intake on 2026-11-01" in r.body
    ja = render(inst, td, "site", "ja").body
    assert "/Hanako Example/（電子署名）　被害者本人の代理人（NPO Example）" in ja and "2026-11-01" in ja
    # no flag, no country rule: the Japanese notices as before, no regime for a deepfake
    plain = make_takedown(inst, make_case(inst, category="deepfake"), make_domain(inst, "plain.example"),
                          "https://plain.example/1")
    assert render(inst, plain, "site", "en").regime is None


def test_a_missing_field_refuses_the_notice_naming_it(inst, tmp_path):
    dom = make_domain(inst, "covered.example", take_it_down=True)
    # no consent readable for this case (no details): the signature's basis is missing
    td = make_takedown(inst, make_case(inst), dom, "https://covered.example/v/1")
    with pytest.raises(notify.MissingRegimeField, match=r"TAKE IT DOWN Act.*signature.*consent\.takedown") as refused:
        render(inst, td, "site", "en")
    assert (refused.value.regime, refused.value.field, refused.value.codes) == ("us_take_it_down", "signature",
                                                                                ["consent"])
    with pytest.raises(notify.RouteRefused, match=r"\(signature\)"):
        notify.prepare(inst, td, "site", "en", address="abuse@covered.example")
    with inst.session() as s:
        assert s.execute(select(Notice)).first() is None                 # nothing half-made
    # the staff member reads it in her language, and the send button is not offered
    from conftest import csrf, staff_client
    client = staff_client(inst)
    page = client.get(f"/takedowns/{td}?lang=ja").get_data(as_text=True)
    assert ("送付できません：TAKE IT DOWN法（米国） に基づく通知には「代理人の署名」が必要です。"
            "不足：受付時に得た、本人に代わって手続を行うことへの本人の同意") in page
    assert 'id="send-form"' not in page
    token = csrf(client, "/takedowns/")
    client.post(f"/takedowns/{td}/send", data={"route": "site", "lang": "en", "csrf_token": token, "confirm": "1"})
    with inst.session() as s:
        assert s.execute(select(Notice)).first() is None                 # the back office cannot force it either
    # signed by a lawyer, but no lawyer named
    td2 = make_takedown(inst, make_case(inst, contact=""), dom, "https://covered.example/v/2")
    inst.settings.notice_capacity = "lawyer"
    with pytest.raises(notify.RouteRefused, match=r"setting notice_lawyer, KESU_NOTICE_LAWYER"):
        render(inst, td2, "site", "ja")
    inst.settings.notice_lawyer = "弁護士 山田太郎"
    assert "/弁護士 山田太郎/（電子署名）　被害者本人の代理人弁護士" in render(inst, td2, "site", "ja").body
    inst.settings.notice_capacity = "representative"
    # DSA: the notifier's e-mail is a required field
    dsa = make_takedown(inst, make_case(inst, category="deepfake"), make_domain(inst, "eu.example", dsa=True),
                        "https://eu.example/1")
    inst.settings.org_email = ""
    with pytest.raises(notify.RouteRefused, match=r"e-mail address"):
        render(inst, dsa, "site", "en")
    inst.settings.org_email = ORG["org_email"]
    # a template that lost a field the regime requires is refused, never sent half-valid
    folder = tmp_path / "regimes"
    folder.mkdir()
    text = (regimes.REGIMES_DIR / "jp_revenge_porn_art4.toml").read_text("utf-8")
    (folder / "jp_revenge_porn_art4.toml").write_text(
        text.replace('fields = ["location", "identification", "right", "reason"]',
                     'fields = ["location", "identification", "right", "reason", "good_faith"]'), "utf-8")
    regimes.regimes.cache_clear()
    try:
        original = regimes.REGIMES_DIR
        regimes.REGIMES_DIR = folder
        td3 = make_takedown(inst, make_case(inst, category="voyeur"), make_domain(inst, "jp.example"),
                            "https://jp.example/1")
        with pytest.raises(notify.RouteRefused, match=r"lacks what .* requires: a statement of good-faith belief"):
            render(inst, td3, "site", "en")
    finally:
        regimes.REGIMES_DIR = original
        regimes.regimes.cache_clear()


def test_a_bad_regime_file_is_a_clear_error(tmp_path):
    good = (regimes.REGIMES_DIR / "us_take_it_down.toml").read_text("utf-8")
    cases = {
        "deadline": (good.replace("hours = 48\n", "hours = -1\n"), r"deadline\.hours"),
        "country": (good.replace('countries = ["*"]', 'countries = ["usa"]'), r"coverage\.countries"),
        "field": (good.replace('"good_faith", ', '"good_feeling", '), r"fields\.2"),
        "template": (good.replace("regimes/us_take_it_down.txt", "regimes/nowhere.txt", 1), r"does not exist"),
        "unknown": ('surprise = "x"\n' + good, r"surprise: Extra inputs"),
        "toml": (good.replace("[deadline]", "[deadline"), r"cannot be read"),
    }
    for name, (text, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "us_take_it_down.toml").write_text(text, "utf-8")
        with pytest.raises(regimes.RegimeError, match=r"regime file us_take_it_down\.toml: .*" + message):
            regimes.load_all(folder)
    # adding a regime is adding a file
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "us_take_it_down.toml").write_text(good, "utf-8")
    (folder / "xx_new.toml").write_text(good.replace('jurisdiction = "US"', 'jurisdiction = "XX"'), "utf-8")
    assert set(regimes.load_all(folder)) == {"us_take_it_down", "xx_new"}


def _case_with_photo(inst, share: bool) -> int:
    """A case taken in through the real intake path, with one generated photo's signals."""
    from PIL import Image

    from crypto.sealing import seal
    from store import cases
    from workers.cases.takein import take_in_submission
    from workers.signals.images import decode_image, pdq_variants
    buf = io.BytesIO()
    img = Image.new("RGB", (256, 256))
    img.putdata([((x * 7) % 256, (y * 3) % 256, (x ^ y) % 256) for y in range(256) for x in range(256)])
    img.save(buf, "PNG")
    data = buf.getvalue()
    sigs = [{"type": "pdq", "item": "p1", **v} for v in pdq_variants(decode_image(data))]
    sigs.append({"type": "md5", "hash": hashlib.md5(data).hexdigest(), "item": "p1"})
    payload = {"version": 1, "category": "adult_ncii", "language": "ja",
               "consent": {"takedown": True, "hotline": False, "share_hashes": share, "at": "2026-11-22"},
               "signals": sigs, "items": [{"item": "p1", "kind": "photo", "label": "photo 1"}]}
    key_id, _ = inst.public_key()
    _, _, case_id, sub_id = cases.create_case(inst, key_id, seal(inst.private_keys().public_key,
                                                                 json.dumps(payload).encode()))
    assert take_in_submission(inst, sub_id)["status"] == "taken_in"
    return case_id, hashlib.md5(data).hexdigest()


def test_the_hash_list_goes_with_her_consent_only(inst):
    dom = make_domain(inst, "covered.example", take_it_down=True)
    shared, md5 = _case_with_photo(inst, share=True)
    kept, _ = _case_with_photo(inst, share=False)
    for case_id, share in ((shared, True), (kept, False)):
        td = make_takedown(inst, case_id, dom, f"https://covered.example/v/{case_id}")
        assert ("hashes.csv" in render(inst, td, "site", "en").body) is share
        nid = notify.prepare(inst, td, "site", "en", address="abuse@covered.example")
        with inst.session() as s:
            msg = email.message_from_bytes(notify.open_archive(inst, s.get(Notice, nid)), policy=email.policy.default)
        files = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}
        if share:
            assert set(files) == {"hashes.csv"} and f"md5,{md5}" in files["hashes.csv"]
            assert files["hashes.csv"].startswith("signal_type,signal_value\n") and "\npdq," in files["hashes.csv"]
        else:
            assert files == {}


def test_domain_csv_carries_the_regime_flags_with_japanese_names(inst):
    from backoffice.domains import import_csv
    csv_text = ("ドメイン,国,指定プラットフォーム,DSA対象,TAKE IT DOWN対象\n"
                "big.example,JP,はい,いいえ,○\n"
                "eu.example,DE,0,1,\n"
                "bad.example,US,maybe,no,no\n"
                "worse.example,US,yes,はいはい,no\n")
    report = import_csv(inst, csv_text.encode("utf-8"))
    assert report.inserted == 2
    assert [line for line, _ in report.bad] == [4, 5]
    assert "designated must be yes or no" in report.bad[0][1] and "'maybe'" in report.bad[0][1]
    assert "dsa must be yes or no" in report.bad[1][1]
    with inst.session() as s:
        big = s.execute(select(Domain).where(Domain.domain == "big.example")).scalar_one()
        eu = s.execute(select(Domain).where(Domain.domain == "eu.example")).scalar_one()
        assert (big.designated, big.dsa, big.take_it_down) == (True, False, True)
        assert (eu.designated, eu.dsa, eu.take_it_down) == (False, True, False)
    # a file without the columns leaves the flags as they are
    import_csv(inst, b"domain,site_name\nbig.example,Big\n")
    with inst.session() as s:
        big = s.execute(select(Domain).where(Domain.domain == "big.example")).scalar_one()
        assert big.site_name == "Big" and (big.designated, big.take_it_down) == (True, True)
    # English names too
    report = import_csv(inst, b"domain,designated,dsa,take_it_down\nen.example,yes,no,true\n")
    assert report.inserted == 1 and not report.bad


def test_domain_page_sets_and_clears_the_regime_flags(inst):
    from conftest import csrf, staff_client
    did = make_domain(inst, "flags.example")
    client = staff_client(inst)
    page = client.get(f"/domains/{did}?lang=ja").get_data(as_text=True)
    assert "通知に適用する法制度" in page and 'id="take_it_down"' in page
    token = csrf(client, f"/domains/{did}")
    form = {"csrf_token": token, "site_name": "Flags", "kind": "tube", "country": "US", "language": "en",
            "contact_email": "abuse@flags.example", "contact_form": "", "hosting": "", "notes": ""}
    assert client.post(f"/domains/{did}", data={**form, "take_it_down": "1", "dsa": "1"}).status_code == 302
    with inst.session() as s:
        d = s.get(Domain, did)
        assert (d.designated, d.dsa, d.take_it_down) == (False, True, True)
    assert client.post(f"/domains/{did}", data=form).status_code == 302          # unticked: cleared
    with inst.session() as s:
        d = s.get(Domain, did)
        assert (d.designated, d.dsa, d.take_it_down) == (False, False, False)
