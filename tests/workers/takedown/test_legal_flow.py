"""A notice under the TAKE IT DOWN Act, followed past its 48-hour deadline: sent through the back
office to a loopback SMTP server (aiosmtpd, STARTTLS), the clock moved past 48 hours with the
page still up on a loopback site, the overdue view lists it, the escalation is proposed with its
package (FTC complaint: evidence summary and timeline), marked sent; the page then removed, the
re-check records the removal and the statistics say "removed after the deadline"."""
import email
import email.policy
from datetime import timedelta

import pytest
from conftest import csrf, make_instance, staff_client
from sqlalchemy import select
from takedown_helpers import make_case, make_domain, make_takedown
from test_takedown_flow import ORG, Site, SMTPSink

from store.models import Notice, Schedule, Takedown, TakedownEvent
from workers.takedown import notify, predict, recheck


@pytest.fixture
def smtp():
    from smtp_helpers import smtp_server
    sink = SMTPSink()
    with smtp_server(sink) as (port, ca_file):
        sink.port, sink.ca_file = port, ca_file
        yield sink


@pytest.fixture
def site():
    s = Site()
    yield s
    s.server.shutdown()


def _rewind(inst, td: int, hours: float) -> None:
    """Move the clock: every stored time of this takedown and its notices goes back `hours`."""
    back = timedelta(hours=hours)
    with inst.session() as s:
        t = s.get(Takedown, td)
        for name in ("requested_at", "deadline_at", "legal_deadline_at", "created_at"):
            if getattr(t, name):
                setattr(t, name, getattr(t, name) - back)
        for n in s.execute(select(Notice).where(Notice.takedown_id == td)).scalars():
            n.sent_at = n.sent_at - back if n.sent_at else None
            n.deadline_at = n.deadline_at - back if n.deadline_at else None
        for e in s.execute(select(TakedownEvent).where(TakedownEvent.takedown_id == td)).scalars():
            e.at = e.at - back


def test_take_it_down_notice_past_its_deadline_escalated_then_removed_late(tmp_path, smtp, site):
    inst = make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", smtp_host="127.0.0.1",
                         smtp_port=smtp.port, smtp_ca_file=smtp.ca_file, **ORG)
    img = b"generated matched media, not a real picture"
    site.pages.update({"/v/1": (200, b"<html>a page</html>"), "/img/1.jpg": (200, img)})
    media = [{"url": site.url + "/img/1.jpg", "key": recheck.media_key(inst.pepper, img)}]
    dom = make_domain(inst, "tube.example", country="US", language="en", contact_email="abuse@tube.example",
                      take_it_down=True)
    case = make_case(inst, category="adult_ncii", language="en", contact="")      # her consent, no contact
    td = make_takedown(inst, case, dom, site.url + "/v/1", media=media)
    fetch = recheck.http_fetcher(allow_private=True)

    # 1. the notice, through the back office's confirmation step, cites the TAKE IT DOWN Act
    client = staff_client(inst)
    item = client.get(f"/takedowns/{td}?lang=en").get_data(as_text=True)
    assert "Law cited: TAKE IT DOWN Act (United States)" in item
    token = csrf(client, f"/takedowns/{td}")
    confirm = client.post(f"/takedowns/{td}/send", data={"route": "site", "lang": "en", "csrf_token": token,
                                                         "address": "abuse@tube.example"}).get_data(as_text=True)
    assert "TAKE IT DOWN Act" in confirm and "abuse@tube.example" in confirm
    client.post(f"/takedowns/{td}/send", data={"route": "site", "lang": "en", "csrf_token": token, "confirm": "1",
                                               "address": "abuse@tube.example"})
    with inst.session() as s:
        nid = s.execute(select(Notice.id).where(Notice.takedown_id == td)).scalar_one()
    assert notify.deliver(inst, nid) == "sent"
    assert len(smtp.messages) == 1 and smtp.messages[0][1] == ["abuse@tube.example"]
    body = email.message_from_bytes(smtp.messages[0][2], policy=email.policy.default).get_body().get_content()
    for needed in ("Request under the TAKE IT DOWN Act", "Statement of good faith:",
                   "Signature of the authorised representative:", "/Hanako Example/ (electronic signature)",
                   "Contact information:", "Legal deadline:", site.url + "/v/1", site.url + "/img/1.jpg"):
        assert needed in body, needed
    with inst.session() as s:
        n, t = s.get(Notice, nid), s.get(Takedown, td)
        assert n.regime == "us_take_it_down" and n.deadline_at - n.sent_at == timedelta(hours=48)
        assert (t.regime, t.legal_deadline_at, t.deadline_at) == ("us_take_it_down", n.deadline_at, n.deadline_at)
        schedules = {r.kind: r.due_at for r in s.execute(select(Schedule)).scalars()}
        assert schedules["recheck"] - n.sent_at == timedelta(hours=24)                 # before the deadline
        assert schedules["deadline"] - n.deadline_at == timedelta(minutes=1)          # and just after it

    # 2. before the deadline, still up: nothing is overdue yet
    assert recheck.run_check(inst, td, fetch=fetch)["outcome"] == "still_up"
    assert "Nothing is overdue." in client.get("/takedowns/overdue?lang=en").get_data(as_text=True)

    # 3. the clock moves past 48 hours, the page still up: overdue, escalation proposed
    _rewind(inst, td, 50)
    assert recheck.run_check(inst, td, fetch=fetch)["outcome"] == "still_up"
    with inst.session() as s:
        t = s.get(Takedown, td)
        assert t.status == "still_up" and t.proposal == "regulator"
        proposal = s.execute(select(TakedownEvent).where(TakedownEvent.kind == "proposal")).scalar_one()
        assert proposal.detail["regime"] == "us_take_it_down" and 1.9 <= proposal.detail["overdue_h"] <= 2.2
    overdue = client.get("/takedowns/overdue?lang=en").get_data(as_text=True)
    assert f'id="overdue-{td}"' in overdue and "tube.example" in overdue
    assert "TAKE IT DOWN Act (United States)" in overdue and "2 hour(s)" in overdue
    assert "Complaint to the regulator" in overdue
    overdue_ja = client.get("/takedowns/overdue?lang=ja").get_data(as_text=True)
    assert "期限超過" in overdue_ja and "TAKE IT DOWN法（米国）" in overdue_ja and "2 時間" in overdue_ja
    assert "規制当局への申告" in overdue_ja
    home = client.get("/?lang=en").get_data(as_text=True)
    assert '<span class="n">1</span> past their deadline' in home
    page = client.get(f"/takedowns/{td}?lang=en").get_data(as_text=True)
    assert "Federal Trade Commission (FTC)" in page and "reportfraud.ftc.gov" in page
    package = page.split('id="package-text"', 1)[1].split("</textarea>", 1)[0]
    for needed in ("Complaint: non-consensual intimate images still online", "TAKE IT DOWN Act",
                   "48 hours from the platform&#39;s receipt of a valid request", "That deadline passed on",
                   "Evidence summary:", "Timeline of requests (UTC):",
                   f"request {nid} sent: site (abuse@tube.example), under TAKE IT DOWN Act (United States)",
                   "checked: still_up", "next route proposed: regulator", site.url + "/v/1"):
        assert needed in package, needed
    ja = client.get(f"/takedowns/{td}?lang=en&notice_lang=ja&escalate=regulator").get_data(as_text=True)
    assert "これまでの依頼の経過" in ja and "法定期限を過ぎても" in ja
    # staff save the package, paste it into the FTC's form and mark it sent
    client.post(f"/takedowns/{td}/escalate", data={"target": "regulator", "lang": "en", "csrf_token": token})
    with inst.session() as s:
        esc = s.execute(select(Notice).where(Notice.route == "regulator")).scalar_one()
        assert (esc.channel, esc.state, esc.regime) == ("form", "form_ready", "us_take_it_down")
    client.post(f"/takedowns/{td}/notices/{esc.id}/sent", data={"csrf_token": token})
    with inst.session() as s:
        assert s.get(Notice, esc.id).state == "form"
        t = s.get(Takedown, td)
        assert t.route == "site" and t.regime == "us_take_it_down"              # a complaint beside, not instead
    assert "marked sent" in client.get(f"/takedowns/{td}?lang=en").get_data(as_text=True)

    # 4. the page and its image are taken down: removal recorded, after the deadline
    site.pages.update({"/v/1": (404, b"gone"), "/img/1.jpg": (404, b"")})
    assert recheck.run_check(inst, td, fetch=fetch)["outcome"] == "removed"
    with inst.session() as s:
        t = s.get(Takedown, td)
        assert t.status == "removed" and t.resolved_at > t.legal_deadline_at
        kinds = set(s.execute(select(Schedule.kind).where(Schedule.ref == str(td))).scalars())
        assert kinds == {"reupload"}                     # the watch for its return, no deadline check left
    assert "Nothing is overdue." in client.get("/takedowns/overdue?lang=en").get_data(as_text=True)
    from backoffice import stats
    with inst.session() as s:
        rows = {r["platform"]: r for r in stats.compute(s)["by_regime"]}
    for platform in ("", "tube.example"):
        row = rows[platform]
        assert (row["regime"], row["requests"], row["within"], row["after"], row["overdue"]) == \
            ("us_take_it_down", 1, 0, 1, 0)
        assert row["share_within"] == 0.0 and 49.9 <= row["median_hours"] <= 50.5
    html = client.get("/stats/?lang=en").get_data(as_text=True)
    table = html.split('id="regime-table"', 1)[1].split("</table>", 1)[0]
    assert "Removed after the deadline" in table and '<td class="after">1</td>' in table
    assert "Median time to removal" in table
    csv_text = client.get("/stats/stats.csv").get_data(as_text=True)
    assert ",us_take_it_down,tube.example,1,0,1,0,0,0.0," in csv_text
    # the compliance prediction reads the same record
    prediction = predict.update_domain(inst, dom)
    legal = prediction["regimes"]["us_take_it_down"]
    assert legal["n"] == 1 and legal["p_within"] < 0.5

    # she withdraws: her takedown is deleted, the by-regime count survives (without times)
    from store import cases
    cases.withdraw(inst, case)
    with inst.session() as s:
        assert s.get(Takedown, td) is None
        rows = {r["platform"]: r for r in stats.compute(s)["by_regime"]}
    assert (rows["tube.example"]["requests"], rows["tube.example"]["after"], rows[""]["after"]) == (1, 1, 1)
    assert rows[""]["share_within"] == 0.0 and rows[""]["median_hours"] is None
    # and the regime-wide rate a new request to this platform is pooled toward still counts it
    other = make_takedown(inst, make_case(inst, contact=""), dom, site.url + "/v/2", status="requested",
                          regime="us_take_it_down", requested_at=t.requested_at, legal_deadline_at=t.legal_deadline_at,
                          deadline_at=t.legal_deadline_at)
    assert other
    legal = predict.update_domain(inst, dom)["regimes"]["us_take_it_down"]
    assert (legal["n"], legal["n_all"]) == (1, 2)             # its own overdue one; plus the withdrawn one
