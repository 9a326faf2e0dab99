"""Who an actor string names, for people to read: "staff:3" is the staff member's e-mail and
role, "cli:root" the command line run by an operating-system user, "worker" the system itself.
The audit log and takedown events keep the short form (stable ids); pages and PDFs show this."""
from .models import Staff

SYSTEM = {"worker": "kesu (automatic worker)", "patrol": "kesu (automatic patrol)", "test": "test",
          "scheduler": "kesu (scheduler)", "victim": "the person concerned (intake)"}


def describe(session, actor: str | None) -> str:
    """A readable name for an actor string (unknown forms are shown as they are)."""
    if not actor:
        return ""
    kind, _, rest = actor.partition(":")
    if kind == "staff" and rest.isdigit():
        staff = session.get(Staff, int(rest))
        return f"{staff.email} ({staff.role})" if staff else f"staff member #{rest} (account deleted)"
    if kind == "cli":
        return f"command line, run by the system user “{rest or '?'}”"
    return SYSTEM.get(actor, actor)


def describer(session):
    """describe() with a cache, for long lists."""
    seen: dict[str, str] = {}

    def name(actor: str | None) -> str:
        if actor not in seen:
            seen[actor] = describe(session, actor)
        return seen[actor]
    return name
