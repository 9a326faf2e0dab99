"""Staff accounts: Argon2id passwords, mandatory TOTP without replay.

Guessing is slowed in the login view (web.throttle, keyed by the HMAC of the e-mail address
typed, whether or not such an account exists), never here: a lock kept on the account row
let anyone keep a person out, and showed which addresses have accounts.
"""
import hmac
import time

import pyotp
from sqlalchemy import select

from crypto import envelope, passphrases
from store import audit
from store.models import Staff

ROLES = ("admin", "staff", "lawyer")


class LoginRefused(Exception):
    """Why a login failed, in words safe to show (never which factor was wrong)."""

    def __init__(self, message: str):
        super().__init__(message)


def totp_key(instance) -> bytes:
    return instance.settings.secret("totp")


def add(instance, email: str, password: str, role: str) -> str:
    """Create a staff account; returns the TOTP secret (shown once, never again)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 12:
        raise ValueError("the password must have at least 12 characters")
    email = email.strip().lower()
    secret = pyotp.random_base32()
    with instance.session() as s:
        if s.execute(select(Staff).where(Staff.email == email)).first():
            raise ValueError(f"{email} already exists")
        staff = Staff(email=email, password_hash=passphrases.hash_secret(instance.pepper, password),
                      totp_secret=envelope.encrypt(totp_key(instance), secret.encode(), aad=email.encode()),
                      role=role)
        s.add(staff)
        s.flush()
        audit.record(s, "cli", "staff.add", f"staff:{staff.id}", role=role)
    return secret


def provisioning_uri(instance, email: str, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=f"kesu ({instance.settings.org_name})")


def _totp_step(secret: str, code: str, after_step: int, now: float) -> int | None:
    """The time step a code belongs to (one step of clock drift allowed), if newer than after_step."""
    totp = pyotp.TOTP(secret)
    step_now = int(now // totp.interval)
    code = (code or "").strip().replace(" ", "")
    for step in (step_now - 1, step_now, step_now + 1):
        if step > after_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def authenticate(instance, email: str, password: str, code: str, now: float | None = None) -> Staff:
    """Password + TOTP. The same work is done for unknown e-mail addresses.

    A failure is written (counter, audit entry) before it is raised.
    """
    now = time.time() if now is None else now
    email = (email or "").strip().lower()
    refused: LoginRefused | None = None
    with instance.session() as s:
        staff = s.execute(select(Staff).where(Staff.email == email)).scalar_one_or_none()
        ok = passphrases.verify_secret(instance.pepper, staff.password_hash if staff else None, password)
        step = None
        if ok and staff.active:
            secret = envelope.decrypt(totp_key(instance), staff.totp_secret, aad=staff.email.encode()).decode()
            step = _totp_step(secret, code, staff.last_totp_step, now)
        if staff is None:
            audit.record(s, "anonymous", "login.failed", "staff:unknown")
            refused = LoginRefused("e-mail, password or code is wrong")
        elif not ok or step is None or not staff.active:
            staff.failed_logins += 1                    # shown to admins; never a lock
            audit.record(s, f"staff:{staff.id}", "login.failed", f"staff:{staff.id}",
                         reason="disabled" if ok and not staff.active else "credentials")
            refused = LoginRefused("e-mail, password or code is wrong")
        else:
            staff.last_totp_step = step
            staff.failed_logins = 0
            audit.record(s, f"staff:{staff.id}", "login", f"staff:{staff.id}")
    if refused:
        raise refused
    return staff
