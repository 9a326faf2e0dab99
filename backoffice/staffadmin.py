"""Staff management: list, disable, re-enable, change role, reset TOTP. Every change audited.

Used by `kesu staff ...` (actor "cli") and the admin pages (actor "staff:<id>"). Disabling
ends the account's sessions at once (they are deleted from the database), and the back
office refuses a disabled account's session on its next request anyway. The last active
admin can be neither disabled nor demoted, so the back office never loses its admins.
"""
from __future__ import annotations

import pyotp
from sqlalchemy import func, select

from backoffice.accounts import ROLES, totp_key
from backoffice.sessions import DatabaseSessionInterface
from crypto import envelope
from store import audit
from store.models import Staff, StaffSession, utcnow


class StaffError(ValueError):
    """A refused change, in words safe to show."""


def _find(s, who) -> Staff:
    staff = None
    if isinstance(who, int) or (isinstance(who, str) and who.isdigit()):
        staff = s.get(Staff, int(who))
    elif isinstance(who, str):
        staff = s.execute(select(Staff).where(Staff.email == who.strip().lower())).scalar_one_or_none()
    if staff is None:
        raise StaffError(f"no staff account {who}")
    return staff


def list_staff(instance) -> list[dict]:
    now = utcnow()
    with instance.session() as s:
        sessions = dict(s.execute(select(StaffSession.staff_id, func.count()).group_by(StaffSession.staff_id)).all())
        return [{"id": st.id, "email": st.email, "role": st.role, "active": bool(st.active),
                 "created": st.created_at.date().isoformat() if st.created_at else None,
                 "failed_logins": st.failed_logins,
                 "throttled": bool(st.throttled_until and st.throttled_until > now),
                 "sessions": int(sessions.get(st.id, 0))}
                for st in s.execute(select(Staff).order_by(Staff.email)).scalars()]


def _other_active_admins(s, staff: Staff) -> int:
    return s.execute(select(func.count()).select_from(Staff).where(
        Staff.role == "admin", Staff.active.is_(True), Staff.id != staff.id)).scalar()


def disable(instance, actor: str, who) -> dict:
    with instance.session() as s:
        staff = _find(s, who)
        if staff.role == "admin" and staff.active and not _other_active_admins(s, staff):
            raise StaffError("this is the last active admin: make another admin first")
        changed = bool(staff.active)
        staff.active = False
        audit.record(s, actor, "staff.disable", f"staff:{staff.id}")
        ident = staff.id
    DatabaseSessionInterface(instance).end_all_for(ident)
    return {"id": ident, "active": False, "changed": changed}


def enable(instance, actor: str, who) -> dict:
    with instance.session() as s:
        staff = _find(s, who)
        changed = not staff.active
        staff.active = True
        staff.failed_logins = 0
        staff.throttled_until = None
        audit.record(s, actor, "staff.enable", f"staff:{staff.id}")
        return {"id": staff.id, "active": True, "changed": changed}


def set_role(instance, actor: str, who, role: str) -> dict:
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    with instance.session() as s:
        staff = _find(s, who)
        old = staff.role
        if old == "admin" and role != "admin" and staff.active and not _other_active_admins(s, staff):
            raise StaffError("this is the last active admin: make another admin first")
        staff.role = role
        audit.record(s, actor, "staff.role", f"staff:{staff.id}", old=old, new=role)
        return {"id": staff.id, "role": role, "old": old}     # read on every request: effective at once


def reset_totp(instance, actor: str, who) -> tuple[str, str]:
    """A new TOTP secret (returned once: (email, secret)); the account's sessions end."""
    secret = pyotp.random_base32()
    with instance.session() as s:
        staff = _find(s, who)
        staff.totp_secret = envelope.encrypt(totp_key(instance), secret.encode(), aad=staff.email.encode())
        staff.last_totp_step = 0            # no code of the new secret was ever used
        staff.failed_logins = 0
        staff.throttled_until = None
        audit.record(s, actor, "staff.reset_totp", f"staff:{staff.id}")
        ident, email = staff.id, staff.email
    DatabaseSessionInterface(instance).end_all_for(ident)
    return email, secret
