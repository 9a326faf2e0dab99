"""Server-side staff sessions kept in the database (Redis holds only queues).

The cookie carries a random token; the database keeps only its SHA-256. Sessions end
after an idle timeout and an absolute timeout, get a fresh id at login, and end at
once when the staff account is disabled (checked on every request).
"""
import hashlib
import secrets
from datetime import timedelta

from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete
from werkzeug.datastructures import CallbackDict

from store.models import StaffSession, utcnow

COOKIE = "kesu_staff"


class StaffSessionData(CallbackDict, SessionMixin):
    def __init__(self, initial=None, token=None, new=False):
        def on_update(_self):
            _self.modified = True
        super().__init__(initial, on_update)
        self.token = token
        self.new = new
        self.modified = False
        self.regenerated_from = None

    def regenerate(self):
        """A fresh id (at login): the old token stops working."""
        if self.token and not self.new:
            self.regenerated_from = self.token
        self.token = None
        self.new = True
        self.modified = True


def _id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DatabaseSessionInterface(SessionInterface):
    def __init__(self, instance):
        self.instance = instance

    def _limits(self):
        s = self.instance.settings
        return timedelta(minutes=s.session_idle_minutes), timedelta(hours=s.session_max_hours)

    def open_session(self, app, request):
        token = request.cookies.get(COOKIE)
        if token:
            idle, absolute = self._limits()
            now = utcnow()
            with self.instance.session() as db:
                row = db.get(StaffSession, _id(token))
                if row and now - row.last_seen_at < idle and now - row.created_at < absolute:
                    row.last_seen_at = now
                    return StaffSessionData(dict(row.data or {}), token=token)
                if row:
                    db.delete(row)
        return StaffSessionData(new=True)

    def save_session(self, app, session, response):
        secure = bool(app.config.get("SESSION_COOKIE_SECURE"))
        with self.instance.session() as db:
            if session.regenerated_from:
                db.execute(delete(StaffSession).where(StaffSession.id == _id(session.regenerated_from)))
            if not session:
                if session.token and not session.new:
                    db.execute(delete(StaffSession).where(StaffSession.id == _id(session.token)))
                    response.delete_cookie(COOKIE, path="/")
                return
            if session.token is None:
                session.token = secrets.token_urlsafe(32)
            row = db.get(StaffSession, _id(session.token))
            if row is None:
                row = StaffSession(id=_id(session.token))
                db.add(row)
            row.data = dict(session)
            row.staff_id = session.get("staff_id")
            row.last_seen_at = utcnow()
        response.set_cookie(COOKIE, session.token, httponly=True, secure=secure, samesite="Strict", path="/")

    def end_all_for(self, staff_id: int) -> None:
        with self.instance.session() as db:
            db.execute(delete(StaffSession).where(StaffSession.staff_id == staff_id))
