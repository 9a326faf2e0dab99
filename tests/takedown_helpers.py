"""Shared helpers for the takedown tests: cases, domains and takedowns made directly in the database."""
import json
import secrets

from crypto import envelope
from crypto.sealing import unb64
from store.models import Case, Domain, Takedown


def details_aad(case_id: int) -> bytes:
    try:
        from store.cases import details_aad as aad
        return aad(case_id)
    except ImportError:
        return f"case:{case_id}|details".encode()


def make_case(instance, category="adult_ncii", language="ja", contact=None) -> int:
    with instance.session() as s:
        case = Case(number_hash=secrets.token_hex(32), passphrase_hash="x", status="found",
                    category=category, language=language)
        s.add(case)
        s.flush()
        case_id = case.id
    if contact is not None:
        key = instance.keystore.create(case_id, unb64(instance.public_key()[1]))
        details = {"known_urls": [], "contact": {"email": contact} if contact else None,
                   "consent": {"takedown": True, "hotline": True, "share_hashes": False, "at": "2026-11-01"}}
        with instance.session() as s:
            s.get(Case, case_id).details = envelope.encrypt(key, json.dumps(details).encode(), details_aad(case_id))
    return case_id


def make_domain(instance, domain="example.com", **kw) -> int:
    values = {"site_name": "Example Tube", "kind": "tube", "country": "JP", "language": "ja",
              "contact_email": "abuse@example.com", "hosting": "Example Hosting", **kw}
    with instance.session() as s:
        d = Domain(domain=domain, **values)
        s.add(d)
        s.flush()
        return d.id


def make_takedown(instance, case_id, domain_id, url, **kw) -> int:
    with instance.session() as s:
        t = Takedown(case_id=case_id, domain_id=domain_id, url=url, **kw)
        s.add(t)
        s.flush()
        return t.id


# An organisation with every field a notice prints (name, contact, address, the responsible person).
ORG = dict(org_name="NPO Example", org_email="help@example.org", org_phone="03-0000-0000",
           org_address="1-2-3 Example-cho, Chiyoda-ku, Tokyo 100-0000", org_responsible="Hanako Example")


def org_instance(tmp_path):
    """A SQLite instance of ORG, unlocked."""
    from conftest import make_instance
    return make_instance(tmp_path / "instance", f"sqlite:///{tmp_path / 'kesu.db'}", **ORG)


def render(inst, takedown_id, route, lang):
    """The notice notify.render gives for a takedown, by route and language."""
    from workers.takedown import notify
    with inst.session() as s:
        return notify.render(inst, s, s.get(Takedown, takedown_id), route, lang)
