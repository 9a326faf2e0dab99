"""Notices: every category x recipient x language renders; the law each one cites; what never goes in."""
import pytest
from sqlalchemy import select
from takedown_helpers import ORG, make_case, make_domain, make_takedown, org_instance, render

from store.models import Notice
from workers.takedown import notify

CATS = ("adult_ncii", "coerced_av", "voyeur", "deepfake", "dmca")
@pytest.fixture
def inst(tmp_path):
    return org_instance(tmp_path)


def test_every_category_recipient_and_language_renders(inst):
    dom = make_domain(inst, contacts={"host": {"email": "abuse@hosting.example", "name": "Example Hosting"},
                                      "registrar": {"email": "abuse@registrar.example", "name": "Example Registrar"}})
    for cat in CATS:
        case = make_case(inst, category=cat, contact="victim.secret@example.net")
        td = make_takedown(inst, case, dom, f"https://example.com/{cat}/1")
        for lang in ("ja", "en"):
            for route in notify.RECIPIENTS:
                r = render(inst, td, route, lang)
                assert r.template == f"notices/{lang}/{cat}/{route}.txt"
                assert f"https://example.com/{cat}/1" in r.body
                assert f"KESU-{td}" in r.subject and f"KESU-{td}" in r.body
                assert "help@example.org" in r.body and "NPO Example" in r.body
                # never the victim: her contact, her case number or her case id as such
                assert "victim.secret" not in r.body and "victim.secret" not in r.subject
                assert "{{" not in r.body and "{%" not in r.body
                two_day = cat in ("adult_ncii", "coerced_av", "voyeur")
                if lang == "ja":
                    assert ("2日" in r.body) == two_day, (cat, route)
                else:
                    assert ("two days" in r.body) == two_day, (cat, route)
    # the notice quotes the evidence: the capture and its signed manifest's hash
    from datetime import datetime, timezone

    from store.models import Capture
    with inst.session() as s:
        s.add(Capture(url=f"https://example.com/{CATS[-1]}/1", final_url="", status="ok", http_status=200,
                      captured_at=datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc),
                      evidence={"artifacts": {"manifest.json": {"sha256": "ab" * 32, "blob": "x", "bytes": 1}}}))
    assert f"manifest.json SHA-256 {'ab' * 32}" in render(inst, td, "host", "en").body
    # every notice names the fingerprint of the key our evidence is signed with
    from crypto.signing import fingerprint
    assert fingerprint(inst.private_keys().verify_key) in render(inst, td, "host", "en").body
    assert fingerprint(inst.private_keys().verify_key) in render(inst, td, "site", "ja").body
    # routes resolve to the right channel
    assert render(inst, td, "host", "en").address == "abuse@hosting.example"
    assert render(inst, td, "registrar", "en").address == "abuse@registrar.example"
    assert render(inst, td, "search_engine", "en").channel == "form"
    assert render(inst, td, "site", "en").address == "abuse@example.com"


def test_the_law_each_category_cites(inst):
    dom = make_domain(inst)
    bodies = {}
    for cat in CATS:
        td = make_takedown(inst, make_case(inst, category=cat), dom, f"https://example.com/{cat}")
        bodies[cat] = {lang: render(inst, td, "site", lang) for lang in ("ja", "en")}
    assert "私事性的画像記録の提供等による被害の防止に関する法律" in bodies["adult_ncii"]["ja"].body
    assert "第4条" in bodies["adult_ncii"]["ja"].body and "送信防止措置" in bodies["adult_ncii"]["ja"].body
    assert "Article 4" in bodies["adult_ncii"]["en"].body
    assert "第16条" in bodies["coerced_av"]["ja"].body and "Article 16" in bodies["coerced_av"]["en"].body
    # the 送信防止措置依頼書 items
    for heading in ("掲載されている場所", "掲載されている情報", "侵害されたとする権利", "権利が侵害されたとする理由"):
        assert heading in bodies["deepfake"]["ja"].body
    assert "7日" in bodies["deepfake"]["ja"].body and "seven days" in bodies["deepfake"]["en"].body
    dmca = bodies["dmca"]["en"]
    assert "512(c)(3)" in dmca.subject
    for element in ("good faith belief", "under penalty of perjury", "Signature:", "Copyrighted work",
                    "Contact information"):
        assert element in dmca.body
    assert "512(c)(3)" in bodies["dmca"]["ja"].body


def test_minor_goes_to_a_hotline_only(inst):
    dom = make_domain(inst)
    td = make_takedown(inst, make_case(inst, category="minor"), dom, "https://example.com/m")
    for route in ("site", "host", "registrar", "search_engine"):
        with pytest.raises(notify.RouteRefused):
            render(inst, td, route, "ja")
        with pytest.raises(notify.RouteRefused):
            notify.prepare(inst, td, route, "en")
    ja = render(inst, td, "hotline", "ja")
    assert "インターネット・ホットラインセンター" in ja.body and "児童ポルノ" in ja.body
    assert [n for n, _ in ja.forms][0].startswith("インターネット・ホットラインセンター")
    en = render(inst, td, "hotline", "en")
    assert "INHOPE" in en.body
    # and the route list agrees
    from workers.takedown import predict
    steps = predict.recommend_routes(None, "minor")
    assert [s["route"] for s in steps] == ["hotline"]
    with inst.session() as s:
        assert s.execute(select(Notice)).first() is None


def test_archived_copy_is_exactly_the_message_and_sealed(inst):
    dom = make_domain(inst)
    td = make_takedown(inst, make_case(inst), dom, "https://example.com/a")
    nid = notify.prepare(inst, td, "site", "ja", actor="staff:1")
    assert notify.prepare(inst, td, "site", "ja", actor="staff:1") == nid          # a second click: same notice
    with inst.session() as s:
        notice = s.get(Notice, nid)
        assert notice.state == "ready" and notice.recipient == "abuse@example.com"
        assert b"example.com/a" not in notice.archived                             # encrypted
        raw = notify.open_archive(inst, notice)
    import email
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Message-ID"] == notice.message_id
    assert "https://example.com/a" in msg.get_content()
    # a different org key cannot open it
    from crypto import CryptoError
    other = notify.archive(__import__("nacl.public", fromlist=["PrivateKey"]).PrivateKey.generate().public_key.encode(),
                           nid, raw)
    notice.archived = other
    with pytest.raises(CryptoError):
        notify.open_archive(inst, notice)


def test_a_refused_victim_confirmation_keeps_no_trace_of_her_address(tmp_path):
    # Her mail server refuses the confirmation, naming her address in its reply: the notice is
    # failed, and neither the recipient nor the error column holds the address.
    from conftest import make_instance
    from smtp_helpers import smtp_server

    class Refuse:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            return f"550 5.1.1 <{address}>: no such user"

    with smtp_server(Refuse()) as (port, ca_file):
        inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", org_email="help@example.org",
                             smtp_host="127.0.0.1", smtp_port=port, smtp_ca_file=ca_file)
        case = make_case(inst, contact="victim.secret@example.net")
        td = make_takedown(inst, case, make_domain(inst), "https://tube.example/v/1")
        with inst.session() as s:
            row = Notice(takedown_id=td, route="victim", recipient="", language="ja", channel="victim",
                         state="ready", message_id="<kesu.victim.1.test@example.org>")
            s.add(row)
            s.flush()
            nid = row.id
        assert notify.deliver(inst, nid) == "failed"
    with inst.session() as s:
        row = s.get(Notice, nid)
        assert row.state == "failed" and row.error and row.recipient == ""
        assert "victim.secret" not in row.error


def test_each_category_and_language_names_the_same_rights_the_sender_and_what_is_required(inst):
    """English and Japanese list the same rights (one list, two labels); every notice says who
    sends it and on what basis, carries the postal address, the named responsible person with a
    signed statement of accuracy, and the date by which action is expected."""
    from datetime import timedelta

    from store.models import utcnow
    dom = make_domain(inst, contacts={"host": {"email": "abuse@hosting.example"}})
    for cat in CATS + ("minor",):
        case = make_case(inst, category=cat)
        td = make_takedown(inst, case, dom, f"https://example.com/{cat}/2")
        act_by = (utcnow() + timedelta(days=notify.deadline_days(cat))).strftime("%Y-%m-%d")
        routes = ("hotline",) if cat == "minor" else notify.RECIPIENTS
        for route in routes:
            bodies = {lang: render(inst, td, route, lang).body for lang in ("ja", "en")}
            for code in notify.RIGHTS[cat]:
                for lang, body in bodies.items():
                    assert notify.RIGHT_LABELS[lang][code] in body, (cat, route, lang, code)
            en, ja = bodies["en"], bodies["ja"]
            assert "Who sends this request and on what basis" in en and "送付者と依頼の根拠" in ja
            for body in (en, ja):
                assert ORG["org_address"] in body and ORG["org_responsible"] in body and act_by in body
            assert "Statement of accuracy" in en and f"Signed: {ORG['org_responsible']}" in en
            assert "真実性の表明" in ja and f"署名: NPO Example {ORG['org_responsible']}" in ja


def test_a_notice_without_a_required_setting_is_refused_naming_it(tmp_path):
    from conftest import make_instance
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}",
                         **{k: v for k, v in ORG.items() if k != "org_address"})
    td = make_takedown(inst, make_case(inst), make_domain(inst), "https://example.com/x")
    with pytest.raises(notify.RouteRefused, match=r"postal address \(setting org_address, KESU_ORG_ADDRESS\)"):
        render(inst, td, "site", "ja")


def test_the_takedown_page_says_in_japanese_which_setting_is_missing(tmp_path):
    from conftest import make_instance, staff_client
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}",
                         **{k: v for k, v in ORG.items() if k != "org_responsible"})
    td = make_takedown(inst, make_case(inst), make_domain(inst), "https://example.com/x")
    page = staff_client(inst).get(f"/takedowns/{td}?lang=ja").get_data(as_text=True)
    assert "次の設定が入るまで通知は作成できません: KESU_ORG_RESPONSIBLE。" in page and 'id="send-form"' not in page
