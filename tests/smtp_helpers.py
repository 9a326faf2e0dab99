"""A real SMTP server on loopback (aiosmtpd) that speaks STARTTLS with a self-signed
certificate, which a test trusts through the `smtp_ca_file` setting: the same path a
deployment with its own CA takes, and the default kesu insists on (verified TLS)."""
import socket
import ssl
import tempfile
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address
from pathlib import Path

_CERT: tuple[Path, Path] | None = None


def loopback_cert() -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1 and localhost, made once per test run."""
    global _CERT
    if _CERT is None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "kesu test mail server")])
        now = datetime.now(timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        folder = Path(tempfile.mkdtemp(prefix="kesu-smtp-cert-"))
        (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        _CERT = folder / "cert.pem", folder / "key.pem"
    return _CERT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def smtp_server(handler, starttls: bool = True, host: str = "127.0.0.1", **smtp_options):
    """Serve `handler` on `host` (loopback); yields (port, ca_file). With `starttls`, the server offers
    STARTTLS and refuses mail before it."""
    from aiosmtpd.controller import Controller
    cert, key = loopback_cert()
    options = dict(smtp_options)
    if starttls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        options.update(tls_context=context, require_starttls=True)
    port = free_port()
    ctl = Controller(handler, hostname=host, port=port, **options)
    ctl.start()
    try:
        yield port, str(cert)
    finally:
        ctl.stop()
