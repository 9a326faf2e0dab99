"""Small recurring jobs that keep the database tidy."""
from datetime import timedelta

from sqlalchemy import delete, or_

from store.models import StaffSession, utcnow
from workers.system import context


def purge_sessions(_ref: str = "") -> int:
    """Delete staff sessions past their idle or absolute timeout."""
    instance = context.instance()
    s = instance.settings
    now = utcnow()
    with instance.session() as db:
        result = db.execute(delete(StaffSession).where(or_(
            StaffSession.last_seen_at < now - timedelta(minutes=s.session_idle_minutes),
            StaffSession.created_at < now - timedelta(hours=s.session_max_hours))))
        return result.rowcount
