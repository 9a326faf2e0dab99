"""Notice mail leaves only over verified TLS (workers/takedown/notify.py), with real SMTP
servers on loopback (aiosmtpd): STARTTLS required by default, the certificate checked
against the configured CA, never a password in the clear."""
import pytest
from smtp_helpers import smtp_server

from workers.takedown import notify

RAW = b"From: notices@example.org\r\nTo: abuse@example.net\r\nSubject: test\r\n\r\nhello\r\n"


class Recorder:
    def __init__(self):
        self.messages, self.secure, self.logins = [], [], []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        self.secure.append(session.ssl is not None)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult
        self.logins.append((auth_data.login, auth_data.password, session.ssl is not None))
        return AuthResult(success=True)


@pytest.fixture(scope="module")
def shared_instance(tmp_path_factory):
    from conftest import make_instance
    folder = tmp_path_factory.mktemp("smtp") / "instance"
    return make_instance(folder, f"sqlite:///{folder / 'kesu.db'}")


@pytest.fixture
def instance_for(shared_instance):
    """The shared instance with these mail settings (and the defaults for the rest)."""
    from store.config import Settings
    defaults = {f: getattr(Settings, f) for f in ("smtp_security", "smtp_ca_file", "smtp_user", "smtp_password")}

    def make(port, **settings):
        for name, value in {**defaults, "smtp_host": "127.0.0.1", "smtp_port": port, **settings}.items():
            setattr(shared_instance.settings, name, value)
        return shared_instance
    return make


def _send(inst):
    return notify.send_raw(inst, "notices@example.org", ["abuse@example.net"], RAW)


def test_by_default_mail_goes_over_verified_starttls_and_logs_in_only_then(instance_for):
    rec = Recorder()
    with smtp_server(rec, authenticator=rec.authenticate) as (port, ca_file):
        inst = instance_for(port, smtp_ca_file=ca_file, smtp_user="kesu", smtp_password="s3cret")
        assert _send(inst) == "sent"
    assert rec.secure == [True] and rec.messages[0].endswith(b"hello\r\n")
    assert rec.logins == [(b"kesu", b"s3cret", True)]


def test_a_server_without_starttls_gets_nothing_not_even_the_password(instance_for):
    rec = Recorder()
    with smtp_server(rec, starttls=False, authenticator=rec.authenticate, auth_require_tls=False) as (port, _):
        inst = instance_for(port, smtp_user="kesu", smtp_password="s3cret")
        with pytest.raises(notify._Retry, match="does not offer STARTTLS"):
            _send(inst)
    assert rec.messages == [] and rec.logins == []


def test_a_certificate_that_does_not_verify_gets_nothing(instance_for):
    rec = Recorder()
    with smtp_server(rec, authenticator=rec.authenticate) as (port, _):
        inst = instance_for(port, smtp_user="kesu", smtp_password="s3cret")       # the system's CAs only
        with pytest.raises(notify._Retry, match="CERTIFICATE_VERIFY_FAILED"):
            _send(inst)
    # The right CA, but another name: the certificate is for 127.0.0.1 and localhost.
    with smtp_server(rec, host="127.0.0.2", authenticator=rec.authenticate) as (port, ca_file):
        inst = instance_for(port, smtp_ca_file=ca_file, smtp_user="kesu", smtp_password="s3cret")
        inst.settings.smtp_host = "127.0.0.2"
        with pytest.raises(notify._Retry, match="IP address mismatch"):
            _send(inst)
    assert rec.messages == [] and rec.logins == []


def test_plain_only_when_the_administrator_says_so_and_never_with_a_password(instance_for):
    rec = Recorder()
    with smtp_server(rec, starttls=False) as (port, _):
        assert _send(instance_for(port, smtp_security="none")) == "sent"
        with pytest.raises(notify._Retry, match="password without TLS"):
            _send(instance_for(port, smtp_security="none", smtp_user="kesu", smtp_password="s3cret"))
    assert rec.secure == [False] and rec.logins == []


def test_mail_in_the_clear_and_unverifiable_timestamps_are_health_problems(shared_instance):
    from workers.system import health
    settings = shared_instance.settings
    settings.smtp_security, settings.tsa_url, settings.tsa_ca_file = "none", "http://127.0.0.1:9/tsa", ""
    codes = [p["code"] for p in health.problem_codes(health.collect(shared_instance))]
    assert "mail_in_clear" in codes and "timestamps_unchecked" in codes
    settings.smtp_security, settings.tsa_ca_file = "starttls", "/etc/tsa-ca.pem"
    codes = [p["code"] for p in health.problem_codes(health.collect(shared_instance))]
    assert "mail_in_clear" not in codes and "timestamps_unchecked" not in codes
    settings.tsa_url, settings.tsa_ca_file = "", ""
