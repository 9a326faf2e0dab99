"""Who may do what in the back office: every route, every role, and where a login may lead.

The role matrix is written down once (ALLOWED); the test walks the app's own url_map, so a
new route without an entry here fails until someone decides who may use it.
"""
import pytest
from sqlalchemy import select

from store.models import Domain

PUBLIC = "public"                     # no login needed
ALL = {"admin", "staff", "lawyer"}    # any logged-in account
STAFF = {"admin", "staff"}
ADMIN = {"admin"}

# (endpoint, method) -> who may use it. Lawyers read; staff act; admins administer.
ALLOWED = {
    ("auth.login", "GET"): PUBLIC, ("auth.login", "POST"): PUBLIC, ("auth.logout", "POST"): PUBLIC,
    ("static", "GET"): PUBLIC, ("static_plain", "GET"): PUBLIC, ("shared.static", "GET"): PUBLIC,
    ("main.home", "GET"): ALL,
    ("cases.index", "GET"): ALL, ("cases.view", "GET"): ALL, ("cases.export", "POST"): ALL,
    ("cases.verify", "POST"): ALL,
    ("admin.index", "GET"): ADMIN, ("admin.health_page", "GET"): ADMIN, ("admin.health_json", "GET"): ADMIN,
    ("admin.discard_job", "POST"): ADMIN, ("admin.retry_job", "POST"): ADMIN, ("admin.retry_run", "POST"): ADMIN,
    ("admin.staff", "GET"): ADMIN,
    ("admin.disable", "POST"): ADMIN, ("admin.enable", "POST"): ADMIN, ("admin.reset_totp", "POST"): ADMIN,
    ("admin.role", "POST"): ADMIN,
    ("domains.index", "GET"): ALL, ("domains.edit", "GET"): ALL, ("domains.save", "POST"): STAFF,
    ("domains.lookup_contacts", "POST"): STAFF, ("domains.add", "POST"): STAFF, ("domains.crawl_url", "POST"): STAFF,
    ("domains.upload", "GET"): ADMIN, ("domains.upload", "POST"): ADMIN,
    ("manual.index", "GET"): STAFF, ("manual.case", "GET"): STAFF, ("manual.answer", "POST"): STAFF,
    ("manual.add", "POST"): STAFF,
    ("patrol.index", "GET"): ALL, ("patrol.data_json", "GET"): ALL,
    ("patrol.edit", "GET"): STAFF, ("patrol.edit", "POST"): STAFF,
    ("review.queue", "GET"): STAFF, ("review.decide_view", "POST"): STAFF, ("review.thumb", "GET"): STAFF,
    ("stats.index", "GET"): ALL, ("stats.data_json", "GET"): ALL, ("stats.download", "GET"): ALL,
    ("takedown.index", "GET"): ALL, ("takedown.item", "GET"): ALL, ("takedown.notice_text", "GET"): ALL,
    ("takedown.check_now", "POST"): STAFF, ("takedown.mark_sent", "POST"): STAFF,
    ("takedown.send", "POST"): STAFF, ("takedown.set_status", "POST"): STAFF,
    ("takedown.overdue", "GET"): ALL, ("takedown.escalate", "POST"): STAFF,
}
MISSING_ID = 987654          # ids that name nothing: a request that passes the role check gets 404/400


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    """SQLite only: roles are checked in Python, the same on PostgreSQL. One instance for this
    file (each test uses its own accounts)."""
    from conftest import make_instance
    folder = tmp_path_factory.mktemp("access") / "instance"
    return make_instance(folder, f"sqlite:///{folder / 'kesu.db'}")


def _routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<int:{arg}>", str(MISSING_ID)).replace(f"<path:{arg}>", "css/none.css")
            yield rule.endpoint, method, path


def test_every_route_and_role_against_the_matrix(instance):
    from conftest import staff_client
    clients = {role: staff_client(instance, role, f"{role}@example.org") for role in sorted(ALL)}
    from backoffice import create_app
    clients["anonymous"] = create_app(instance).test_client()
    for client in clients.values():
        client.application.config["WTF_CSRF_ENABLED"] = False     # CSRF has its own tests; roles here
    routes = list(_routes(clients["anonymous"].application))
    assert {(e, m) for e, m, _ in routes} == set(ALLOWED), "a route without a decision in ALLOWED (or a stale entry)"
    wrong = []
    for endpoint, method, path in routes:
        allowed = ALLOWED[(endpoint, method)]
        if allowed == PUBLIC or endpoint == "auth.logout":
            continue
        for who, client in clients.items():
            status = client.open(path, method=method).status_code
            if who == "anonymous":
                verdict = "login" if status == 302 else status
                expected = "login"
            else:
                verdict = "refused" if status == 403 else "allowed"
                expected = "allowed" if who in allowed else "refused"
            if verdict != expected:
                wrong.append(f"{who} {method} {path}: {status}, expected {expected}")
    assert not wrong, "\n".join(wrong)


def test_a_lawyer_cannot_change_where_notices_go(instance):
    from conftest import csrf, staff_client
    with instance.session() as s:
        s.add(Domain(domain="tube.example", contact_email="abuse@tube.example"))
    with instance.session() as s:
        domain_id = s.execute(select(Domain.id)).scalar_one()
    lawyer = staff_client(instance, "lawyer", "counsel@example.org")
    page = lawyer.get(f"/domains/{domain_id}")
    assert page.status_code == 200 and "<fieldset class=\"plain\" disabled>" in page.get_data(True)
    token = csrf(lawyer, f"/domains/{domain_id}")
    r = lawyer.post(f"/domains/{domain_id}", data={"csrf_token": token, "contact_email": "me@attacker.example"})
    assert r.status_code == 403
    with instance.session() as s:
        assert s.execute(select(Domain.contact_email)).scalar_one() == "abuse@tube.example"


def test_login_only_leads_to_this_site(instance):
    import pyotp
    from conftest import csrf

    from backoffice import accounts, create_app
    secret = accounts.add(instance, "worker@example.org", "correct horse battery staple", "staff")
    client = create_app(instance).test_client()
    r = client.post("/login?next=/%09/evil.example", data={
        "email": "worker@example.org", "password": "correct horse battery staple",
        "code": pyotp.TOTP(secret).now(), "csrf_token": csrf(client, "/login")})
    assert r.status_code == 302 and r.headers["Location"] == "/"


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "//evil.example", "/\\evil.example",
                                    "https://evil.example/", "/ /evil.example", "/\x7f/evil.example", "evil.example"])
def test_next_targets_that_leave_the_site_are_refused(target):
    from backoffice.auth import local_target
    assert local_target(target) is None


def test_next_targets_on_this_site_are_kept():
    from backoffice.auth import local_target
    assert local_target("/takedowns/?page=2") == "/takedowns/?page=2"


def test_no_one_can_keep_a_colleague_out_and_no_account_oracle(instance):
    """Failing on purpose with a colleague's address slows guesses (429 with a challenge),
    exactly as for an address that has no account; her password and code, with the
    challenge solved (as login.js does), get in at once."""
    import html
    import re

    import pyotp
    from conftest import csrf
    from test_lockout import solve

    from backoffice import accounts, create_app
    secret = accounts.add(instance, "colleague@example.org", "correct horse battery staple", "staff")
    client = create_app(instance).test_client()
    from web.throttle import Throttle
    client.application.extensions["kesu.login_throttle"] = Throttle(work_bits=4, clock=lambda: 0.0)  # time stands still
    token = csrf(client, "/login?lang=en")

    def attempt(email, password="wrong password!!", code="000000", work=""):
        return client.post("/login?lang=en", data={"email": email, "password": password, "code": code,
                                                   "csrf_token": token, "work": work})
    for email in ("colleague@example.org", "nobody@example.org"):
        codes = [attempt(email).status_code for _ in range(12)]
        assert codes == [401] * 5 + [429] * 7, (email, codes)
    assert attempt("colleague@example.org").get_data().count(b"data-work-challenge") == 1
    r = attempt("colleague@example.org", "correct horse battery staple", pyotp.TOTP(secret).now())
    assert r.status_code == 429 and "Retry-After" in r.headers
    page = r.get_data(True)
    work = {"challenge": html.unescape(re.search(r'data-work-challenge="([^"]+)"', page).group(1)),
            "bits": int(re.search(r'data-work-bits="(\d+)"', page).group(1)),
            "count": int(re.search(r'data-work-count="(\d+)"', page).group(1))}
    r = attempt("colleague@example.org", "correct horse battery staple", pyotp.TOTP(secret).now(), work=solve(work))
    assert r.status_code == 302 and r.headers["Location"] == "/"
