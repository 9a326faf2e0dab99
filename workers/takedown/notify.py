"""Notices: render the right template for a route, keep an encrypted copy, send it once.

The flow of one notice:
  prepare()  -> a Notice row in state "ready", with a fixed Message-ID and the exact message
                bytes archived under a fresh data key sealed to the case's seal key
                (store.casekeys: once the case is withdrawn, no one can open it);
  deliver()  -> (RQ job `send_notice`, or the sweep) "ready" -> "sending" -> SMTP -> "sent".
A retried or duplicated job finds the state moved on and does nothing, so no notice goes out
twice. A failure before the SMTP DATA command puts the notice back to "ready" (nothing was
sent); a failure during DATA leaves it "uncertain" for staff to check, never resent blindly.
Contact-form routes (search engines, hotlines, sites with only a form) get the same text to
copy, and staff mark them as sent.

What goes where: a notice to a site names the URLs and our evidence references, never the
victim. A message to the victim (only if she left an e-mail) says that a request went out,
with no URL, no site and no content, under a neutral subject.
"""
import hashlib
import logging
import re
import secrets
import smtplib
import ssl
from dataclasses import dataclass
from datetime import timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import select
from sqlalchemy.orm import object_session

from crypto import envelope
from crypto.sealing import seal, unseal
from store import casekeys
from store.models import Capture, Case, Domain, Match, Media, Notice, Schedule, Takedown, TakedownEvent, utcnow
from store.urls import host_of
from store.vocabulary import LANGUAGES, NOTICE_CATEGORIES, RECHECK_EVERY_S
from web import TEMPLATES
from workers.capture.evidence import MANIFEST
from workers.takedown import predict, regimes

log = logging.getLogger("kesu.notify")

RECIPIENTS = ("site", "host", "registrar", "search_engine", "hotline")
TWO_DAY_RULE = frozenset({"adult_ncii", "coerced_av", "voyeur"})   # revenge porn act art. 4, AV act art. 16
SENT_STATES = ("sent", "form")
SEARCH_FORMS = [("Google", "https://support.google.com/websearch/answer/6302812"),
                ("Bing", "https://www.microsoft.com/en-us/concern/revengeporn")]
HOTLINES = {"JP": [("インターネット・ホットラインセンター (IHC)", "https://www.internethotline.jp/"),
                   ("セーフライン (Safe Line)", "https://www.safe-line.jp/")],
            "*": [("INHOPE", "https://www.inhope.org/EN")]}


# What every notice must carry, from the instance's settings (store/config.py): setting -> what it is.
# A notice missing one is refused with a message naming it. Legal regimes (issue #20) add their own
# entries per category or route here; the shared ones come from what a provider needs to act on a
# request (Japan's 送信防止措置依頼書 form asks for the requester's name, address and contact and a
# statement of the facts; DMCA 512(c)(3) asks for a signature and a statement of accuracy).
# Source: DESIGN.md §7 anchors; checked 2026-12-07; for a lawyer's review.
REQUIRED_FIELDS: dict[str, dict[str, str]] = {
    "*": {"org_name": "the organisation's name", "org_email": "the organisation's e-mail address",
          "org_address": "the organisation's postal address",
          "org_responsible": "the named person responsible for notices"},
}

# The rights each category's notice names, one list for both languages (RIGHT_LABELS translate).
RIGHTS = {"adult_ncii": ("privacy", "portrait", "personality"), "voyeur": ("privacy", "portrait", "personality"),
          "coerced_av": ("personality", "privacy", "portrait"), "deepfake": ("reputation", "portrait", "personality"),
          "dmca": ("copyright",), "minor": ("child", "privacy", "personality")}
RIGHT_LABELS = {
    "en": {"privacy": "privacy", "portrait": "image (portrait) rights", "personality": "personality rights",
           "reputation": "reputation (honour)", "copyright": "copyright (reproduction and communication to the public)",
           "child": "the rights of the child"},
    "ja": {"privacy": "プライバシー権", "portrait": "肖像権", "personality": "人格権", "reputation": "名誉権",
           "copyright": "著作権（複製権、公衆送信権）", "child": "児童の権利"},
}


def required_fields(category: str | None, route: str) -> dict[str, str]:
    """The settings a notice of this category to this route needs (shared ones, then the category's)."""
    return {**REQUIRED_FIELDS["*"], **REQUIRED_FIELDS.get(category or "", {}), **REQUIRED_FIELDS.get(route, {})}


def missing_fields(settings, category: str | None, route: str) -> list[str]:
    return [name for name in required_fields(category, route) if not str(getattr(settings, name, "") or "").strip()]


def rights_text(category: str | None, language: str) -> str:
    labels = RIGHT_LABELS["ja" if language == "ja" else "en"]
    return ("、" if language == "ja" else ", ").join(labels[r] for r in RIGHTS.get(category or "", ()))


class RouteRefused(ValueError):
    """A route that must not be used (a minor's case to a site) or has no notice (lawyer)."""


class MissingSettings(RouteRefused):
    """A notice refused because the instance lacks what every notice must carry (REQUIRED_FIELDS)."""

    def __init__(self, missing: list[str], message: str):
        super().__init__(message)
        self.missing = missing


class MissingRegimeField(RouteRefused):
    """A notice refused because the regime it cites requires a field it cannot carry."""

    def __init__(self, regime: str, field: str, codes: list[str], message: str):
        super().__init__(message)
        self.regime, self.field, self.codes = regime, field, codes


def deadline_days(category: str | None) -> int:
    return 2 if category in TWO_DAY_RULE else 7


def route_window(regime, category: str | None) -> timedelta:
    """How long the current route gets: the cited regime's legal deadline where it gives one,
    else the Japanese practice above (2 or 7 days)."""
    legal = legal_window(regime)
    return legal if legal is not None else timedelta(days=deadline_days(category))


def legal_window(regime) -> timedelta | None:
    """The legal deadline a notice under this regime starts (None: none in force or no figure)."""
    if regime is None or regime.deadline.duty == "none" or regime.status != "in_force":
        return None
    return regime.window


# --- who signs, on what basis (弁護士法72条: the notice says truthfully in which capacity) --------

CAPACITIES = ("representative", "lawyer")
SIGNER_TEXT = {
    "en": {"representative": "authorised representative of the person depicted, for {org}",
           "lawyer": "attorney acting for the person depicted",
           "basis": "the person depicted consented at our intake on {date} to {org} acting on their behalf "
                    "to have this material removed"},
    "ja": {"representative": "被害者本人の代理人（{org}）",
           "lawyer": "被害者本人の代理人弁護士",
           "basis": "本人が{date}に当団体の受付で、削除のために{org}が本人に代わって手続を行うことに同意しています"},
}


def consent_of(instance, case) -> dict:
    """Her consent as taken at intake (the sealed payload's `consent`); {} when none can be read."""
    if case is None or not case.details:
        return {}
    try:
        from workers.cases.decrypt import case_details
        return (case_details(instance, case.id) or {}).get("consent") or {}
    except Exception:                       # keys locked or the case key gone: no basis can be shown
        log.warning("case %s: consent could not be read", case.id)
        return {}


def signer_for(settings, consent: dict, language: str) -> dict:
    """{"name", "capacity", "basis", "problems": [(code, what is missing)]}; a code is "capacity",
    "consent" or "setting:<name>" (the back office words each in the staff member's language)."""
    capacity = (settings.notice_capacity or "representative").strip()
    problems = []
    if capacity not in CAPACITIES:
        problems.append(("capacity", f"notice_capacity must be one of {', '.join(CAPACITIES)}, not {capacity!r}"))
        capacity = "representative"
    name = (settings.notice_lawyer if capacity == "lawyer" else settings.org_responsible).strip()
    if not name:
        setting = "notice_lawyer" if capacity == "lawyer" else "org_responsible"
        problems.append((f"setting:{setting}", f"the name of who signs (setting {setting}, KESU_{setting.upper()})"))
    if consent.get("takedown") is not True:
        problems.append(("consent", "her consent to act on her behalf (consent.takedown, taken at intake), "
                                    "which this case does not show"))
    text = SIGNER_TEXT["ja" if language == "ja" else "en"]
    org = settings.org_name
    return {"name": name, "capacity": text[capacity].format(org=org),
            "basis": text["basis"].format(org=org, date=str(consent.get("at") or "")[:10] or "?"),
            "problems": problems}


def field_problems(field: str, settings, signer: dict, urls: list) -> list[tuple[str, str]]:
    """What is missing for one required field of a regime (empty: it can be carried)."""
    if field == "location":
        return [] if urls else [("url", "the URL")]
    if field == "signature":
        return signer["problems"]
    if field == "contact":
        return [(f"setting:{name}", f"{what} (setting {name}, KESU_{name.upper()})") for name, what in
                (("org_email", "an e-mail address"), ("org_address", "a postal address")) if not getattr(settings, name)]
    if field == "notifier":
        missing = [(f"setting:{name}", f"the organisation's {what} (setting {name}, KESU_{name.upper()})")
                   for name, what in
                   (("org_name", "name"), ("org_email", "e-mail address")) if not getattr(settings, name)]
        return missing + [p for p in signer["problems"] if p[0].startswith("setting:")]
    return []                               # statements and the category's text: in the templates


def label_for(language: str):
    def label(field: str) -> str:
        return regimes.FIELDS[field]["ja" if language == "ja" else "en"]
    return label


# --- rendering ------------------------------------------------------------------------------------

_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=False, undefined=StrictUndefined,
                   keep_trailing_newline=True, trim_blocks=False)


@dataclass
class Rendered:
    subject: str
    body: str
    template: str
    route: str
    language: str
    channel: str             # email|form
    address: str             # e-mail address, or "" for a form
    forms: list              # [(name, url)] where a form is the way (or an alternative)
    regime: str | None = None          # the regime the notice cites (the strongest that applies)
    regimes: tuple = ()                # every applicable regime whose notice goes to the platform
    hashes: bool = False               # her consent to share hashes: the hash list goes with it


def template_name(language: str, category: str, route: str) -> str:
    if category not in NOTICE_CATEGORIES:
        raise RouteRefused(f"unknown category {category!r}")
    if route not in RECIPIENTS:
        raise RouteRefused(f"route {route!r} has no notice (lawyer: export the evidence instead)")
    if category == "minor" and route != "hotline":
        raise RouteRefused("a minor's case goes to a hotline only, never to the site or its providers")
    return f"notices/{language if language in LANGUAGES else 'en'}/{category}/{route}.txt"


def evidence_refs(session, takedown: Takedown) -> list[str]:
    refs = []
    caps = session.execute(select(Capture).where(Capture.url == takedown.url, Capture.status == "ok")
                           .order_by(Capture.id).limit(3)).scalars().all()
    for c in caps:
        manifest = ((c.evidence or {}).get("artifacts") or {}).get(MANIFEST) or {}
        digest = f", {MANIFEST} SHA-256 {manifest['sha256']}" if manifest.get("sha256") else ""
        refs.append(f"capture {c.id}: {c.captured_at:%Y-%m-%d %H:%M} UTC, HTTP {c.http_status or '-'}"
                    f"{', server ' + c.server_ip if c.server_ip else ''}{digest}")
    return refs


def route_address(domain: Domain | None, route: str, country: str | None = None) -> tuple[str, str, list]:
    """(channel, e-mail address or "", forms) for a route to this domain."""
    contacts = (domain.contacts or {}) if domain else {}
    if route == "site":
        emails = [e.strip() for e in (domain.contact_email if domain else "").split(",") if e.strip()]
        emails += contacts.get("site", {}).get("emails", [])
        forms = [("form", f) for f in ([domain.contact_form] if domain and domain.contact_form else [])
                 + contacts.get("site", {}).get("forms", [])]
        return ("email", emails[0], forms) if emails else ("form", "", forms)
    if route in ("host", "registrar"):
        email = contacts.get(route, {}).get("email", "")
        return ("email" if email else "form", email, [])
    if route == "search_engine":
        return "form", "", list(SEARCH_FORMS)
    if route == "hotline":
        return "form", "", list(HOTLINES["JP"] if (country or "JP").upper() == "JP" else HOTLINES["*"])
    raise RouteRefused(f"route {route!r} has no notice")


def context_for(instance, session, takedown: Takedown, route: str) -> dict:
    case = session.get(Case, takedown.case_id)
    domain = session.get(Domain, takedown.domain_id) if takedown.domain_id else None
    category = case.category if case else None
    host = host_of(takedown.url)
    urls = [takedown.url] + [m["url"] for m in (takedown.media or []) if m.get("url") and m["url"] != takedown.url
                             and not m["url"].startswith("data:")]
    contacts = (domain.contacts or {}) if domain else {}
    settings = instance.settings
    hotlines = route_address(domain, "hotline", domain.country if domain else None)[2] if route == "hotline" else []
    return {
        "org": {"name": settings.org_name, "email": settings.org_email or settings.smtp_from, "phone": settings.org_phone,
                "address": settings.org_address, "responsible": settings.org_responsible},
        "recipient": route, "category": category, "urls": urls, "ref": f"KESU-{takedown.id}",
        "evidence": evidence_refs(session, takedown),
        "domain": domain.domain if domain else host,
        "site_label": (f"{domain.site_name} ({domain.domain})" if domain and domain.site_name else
                       (domain.domain if domain else host)),
        "host_name": (domain.hosting if domain else "") or contacts.get("host", {}).get("name", ""),
        "registrar_name": contacts.get("registrar", {}).get("name", ""),
        "hotline_name": " / ".join(n for n, _ in hotlines),
        "two_day_rule": category in TWO_DAY_RULE, "deadline_days": deadline_days(category),
        "date": utcnow().strftime("%Y-%m-%d"),
        "signing_fingerprint": signing_fingerprint(instance),
        "act_by": (utcnow() + timedelta(days=deadline_days(category))).strftime("%Y-%m-%d"),
    }


def signing_fingerprint(instance) -> str:
    """The fingerprint of the key that signs our evidence, so that a recipient can check any
    export we send later (`kesu evidence verify --fingerprint`). Derived from the private
    key where the process holds it."""
    from crypto.sealing import unb64
    from crypto.signing import fingerprint
    key = (instance.private_keys().verify_key if instance.unlocked
           else unb64(instance.active_key().bundle["verify_key"]))
    return fingerprint(key)


def render_template(name: str, context: dict) -> str:
    """A notice template's text, blank runs folded (notices and escalation packages)."""
    text = _env.get_template(name).render(**context)
    return re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n")).strip() + "\n"


def render(instance, session, takedown: Takedown, route: str, language: str) -> Rendered:
    """The notice's text. Refused (RouteRefused, naming the field) when a setting or a field that
    the applicable regimes require is missing: never sent half-valid."""
    case = session.get(Case, takedown.case_id)
    category = case.category if case else None
    name = template_name(language, category, route)
    missing = missing_fields(instance.settings, category, route)
    if missing:
        needs = required_fields(category, route)
        raise MissingSettings(missing, "a notice needs " + "; ".join(
            f"{needs[m]} (setting {m}, KESU_{m.upper()})" for m in missing))
    domain = session.get(Domain, takedown.domain_id) if takedown.domain_id else None
    strongest, found = regimes.strongest_notice_regime(domain, category, route)
    context = context_for(instance, session, takedown, route)
    context["rights"] = rights_text(category, language)
    context["label"] = label_for(language)
    consent = consent_of(instance, case) if (found or route in ("site", "host")) else {}
    context["hashes_attached"] = consent.get("share_hashes") is True and route in ("site", "host")
    signer = signer_for(instance.settings, consent, language)
    context["signer"] = signer
    context["regime"] = None
    if strongest is not None:
        for field in strongest.fields:       # the notice cites the strongest and carries what it requires
            problems = field_problems(field, instance.settings, signer, context["urls"])
            if problems:
                raise MissingRegimeField(strongest.id, field, [code for code, _ in problems],
                                         f"a notice under {strongest.name.en} must carry "
                                         f"{regimes.FIELDS[field]['what']} ({field}): missing "
                                         + "; ".join(text for _, text in problems))
        window = route_window(strongest, category)
        due = utcnow() + window
        context["act_by"] = due.strftime("%Y-%m-%d %H:%M UTC") if window < timedelta(days=3) else due.strftime("%Y-%m-%d")
        context["regime"] = {
            "id": strongest.id, "template": strongest.templates[language if language in LANGUAGES else "en"],
            "law": strongest.law.get(language), "counted_from": strongest.deadline.counted_from.get(language),
            "due": (context["act_by"] + (" (目安)" if language == "ja" else " (approximate)")
                    if strongest.deadline.approximate else context["act_by"]),
            "others": [r.law.get(language) for r in found[1:]],
        }
    text = render_template(name, context)
    if strongest is not None:
        label = context["label"]
        absent = [f for f in regimes.required([strongest]) if label(f) not in text]
        if absent:                          # a template that lost a field: refuse rather than send it
            raise RouteRefused(f"the notice text ({name}) lacks what {strongest.name.en} requires: "
                               + ", ".join(f"{regimes.FIELDS[f]['what']} ({f})" for f in absent))
    first, _, body = text.partition("\n")
    subject = re.sub(r"^(Subject|件名):\s*", "", first).strip()
    channel, address, forms = route_address(domain, route, domain.country if domain else None)
    return Rendered(subject=subject, body=body.lstrip("\n"), template=name, route=route, language=language,
                    channel=channel, address=address, forms=forms, regime=strongest.id if strongest else None,
                    regimes=tuple(r.id for r in found), hashes=context["hashes_attached"])


# --- the archive: exactly what was sent, sealed to the case (org key: older rows) ------------------

def _aad(notice_id: int) -> bytes:
    return casekeys.notice_aad(notice_id)


def archive(public_key: bytes, notice_id: int, raw: bytes) -> bytes:
    """The older layout, sealed to the org key (kept for rows made before case seal keys)."""
    key = envelope.new_key()
    sealed_key = seal(public_key, key)
    return len(sealed_key).to_bytes(2, "big") + sealed_key + envelope.encrypt(key, raw, _aad(notice_id))


def default_language(domain) -> str:
    """A notice is written in the site's language: the domain's language when it is one we
    write (ja, en), else Japanese for a site in Japan, else English."""
    code = ((domain.language if domain else "") or "").strip().lower()[:2]
    if code in LANGUAGES:
        return code
    return "ja" if domain is not None and (domain.country or "").upper() == "JP" else "en"


def archive_for_case(instance, session, case_id: int, notice_id: int, raw: bytes) -> bytes:
    """Sealed to the case (store.casekeys); to the org key only for a case with no seal key."""
    case = session.get(Case, case_id)
    public = casekeys.seal_key(instance, case) if case is not None else None
    if public is None:
        return archive(_public_key(instance), notice_id, raw)
    return casekeys.seal_to_case(public, raw, _aad(notice_id))


def open_archive(instance, notice: Notice) -> bytes:
    """The notice as sent; LookupError when its case is withdrawn (the key is gone)."""
    value = bytes(notice.archived)
    if casekeys.is_case_sealed(value):
        session = object_session(notice)
        if session is not None:
            case_id = session.get(Takedown, notice.takedown_id).case_id
        else:
            with instance.session() as s:
                case_id = s.get(Takedown, notice.takedown_id).case_id
        raw = casekeys.open_for_case(instance, case_id, value, _aad(notice.id))
        if raw is None:
            raise LookupError(f"notice {notice.id}: its case's key is gone")
        return raw
    size = int.from_bytes(value[:2], "big")
    key = unseal(instance.private_keys().private_key, value[2:2 + size])
    return envelope.decrypt(key, value[2 + size:], _aad(notice.id))


def _public_key(instance) -> bytes:
    from crypto.sealing import unb64
    return unb64(instance.public_key()[1])


def mail_domain(instance) -> str:
    sender = instance.settings.smtp_from or instance.settings.org_email or ""
    return sender.rsplit("@", 1)[-1].strip(">").strip() or "kesu.invalid"


def victim_sender(instance) -> str:
    """Mail to the victim comes from its own neutral sender (`victim_mail_from`), never from the
    notices' address: anyone who sees her inbox must not learn what it is about."""
    return instance.settings.victim_mail_from or instance.settings.smtp_from or instance.settings.org_email


def message(instance, to: str, subject: str, body: str, message_id: str, auto: bool = False,
            sender: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    sender = sender or instance.settings.smtp_from or instance.settings.org_email
    msg["From"] = sender
    msg["To"] = to
    if instance.settings.org_email and instance.settings.org_email != sender and not auto:
        msg["Reply-To"] = instance.settings.org_email
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow().replace(tzinfo=timezone.utc))
    msg["Message-ID"] = message_id
    if auto:
        msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body, charset="utf-8")
    return msg


# --- prepare / deliver ------------------------------------------------------------------------------

def event(session, takedown_id: int, kind: str, actor: str = "", **detail) -> None:
    session.add(TakedownEvent(takedown_id=takedown_id, kind=kind, actor=actor, detail=detail))


def prepare(instance, takedown_id: int, route: str, language: str, actor: str = "",
            address: str | None = None, again: bool = False) -> int:
    """The notice for this takedown and route, made once (a second click returns the same one)."""
    hashes = hash_list(instance, takedown_id, route, actor or "system")
    with instance.session() as s:
        takedown = s.get(Takedown, takedown_id, with_for_update=True)
        if takedown is None:
            raise KeyError(takedown_id)
        existing = s.execute(select(Notice).where(Notice.takedown_id == takedown_id, Notice.route == route,
                                                  Notice.channel != "victim",
                                                  Notice.state.in_(("ready", "sending", "sent", "form", "uncertain")))
                             .order_by(Notice.id.desc())).scalars().first()
        if existing is not None and not (again and existing.state in SENT_STATES):
            return existing.id
        attach_media(s, takedown)
        r = render(instance, s, takedown, route, language)
        to = (address or r.address or "").strip()
        channel = "email" if to else "form"
        if to and not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+", to):
            raise ValueError(f"not an e-mail address: {to!r}")
        notice = Notice(takedown_id=takedown_id, route=route, recipient=to, language=language, channel=channel,
                        state="ready" if channel == "email" else "form_ready", regime=r.regime)
        s.add(notice)
        s.flush()
        notice.message_id = f"<kesu.{notice.id}.{secrets.token_hex(6)}@{mail_domain(instance)}>"
        msg = message(instance, to or "(contact form)", r.subject, r.body, notice.message_id)
        if r.hashes and hashes:
            msg.add_attachment(hashes, maintype="text", subtype="csv", filename="hashes.csv")
        notice.archived = archive_for_case(instance, s, takedown.case_id, notice.id,
                                           msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
        event(s, takedown_id, "notice", actor, notice=notice.id, route=route, language=language, channel=channel,
              template=r.template, regime=r.regime, hashes=r.hashes)
        return notice.id


def hash_list(instance, takedown_id: int, route: str, actor: str) -> bytes | None:
    """Her hash list (PDQ and MD5) for a notice to the site or its host, only with her consent to
    share hashes (workers.matching.banks checks it again and audits the export); None otherwise.
    Made before the notice's transaction, whose row locks the export's audit entry would wait on."""
    if route not in ("site", "host"):
        return None
    with instance.session() as s:
        takedown = s.get(Takedown, takedown_id)
        case = s.get(Case, takedown.case_id) if takedown else None
        consent = consent_of(instance, case)
    if consent.get("share_hashes") is not True:
        return None
    from workers.matching import banks
    data, summary = banks.export_case(instance, case.id, "csv", actor=actor)
    return data if (summary["pdq"] or summary["md5"]) else None


def enqueue(instance, notice_id: int) -> bool:
    """Hand the notice to a worker; False when no queue is reachable (the sweep will)."""
    from workers import jobs
    return jobs.enqueue(instance.settings, "send_notice", str(notice_id), job_id=f"notice-{notice_id}")


def send_notice(ref: str) -> str:
    """RQ job: send one notice (ref = notice id). Idempotent."""
    from workers.system.context import instance as current
    return deliver(current(), int(ref))


SMTP_SECURITY = ("starttls", "tls", "none")


class SMTPConfigError(smtplib.SMTPException):
    """The mail settings would send in the clear or cannot be honoured."""


def tls_context(settings) -> ssl.SSLContext:
    """Verified TLS: the system's CAs, or the administrator's own (`smtp_ca_file`)."""
    return ssl.create_default_context(cafile=settings.smtp_ca_file or None)


def _smtp(instance):
    """A connected client over verified TLS: STARTTLS (the default, required: a server that
    does not offer it gets nothing) or implicit TLS ("tls", port 465). Plain SMTP only when
    the administrator set `smtp_security = "none"`, and then never with a password."""
    st = instance.settings
    host, mode = st.smtp_host or "127.0.0.1", st.smtp_security
    if mode not in SMTP_SECURITY:
        raise SMTPConfigError(f"smtp_security must be one of {', '.join(SMTP_SECURITY)}, not {mode!r}")
    if mode == "none" and st.smtp_user:
        raise SMTPConfigError("refusing to send the SMTP password without TLS (smtp_security = none)")
    if mode == "tls":
        client = smtplib.SMTP_SSL(host, st.smtp_port, timeout=30, context=tls_context(st))
    else:
        client = smtplib.SMTP(host, st.smtp_port, timeout=30)
    try:
        client.ehlo()
        if mode == "starttls":
            if not client.has_extn("starttls"):
                raise SMTPConfigError(f"{host} does not offer STARTTLS: nothing is sent in the clear "
                                      "(smtp_security = none allows it, without a password)")
            client.starttls(context=tls_context(st))
            client.ehlo()
        if st.smtp_user:
            client.login(st.smtp_user, st.smtp_password)
    except BaseException:
        client.close()
        raise
    return client


def send_raw(instance, sender: str, to: list[str], raw: bytes) -> str:
    """SMTP up to the commit point; returns "sent", raises _Retry (nothing sent) or _Uncertain."""
    committing = False
    try:
        client = _smtp(instance)
        try:
            code, resp = client.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, resp, sender)
            for rcpt in to:
                code, resp = client.rcpt(rcpt)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
            committing = True
            code, resp = client.data(raw)
            if code != 250:
                raise smtplib.SMTPDataError(code, resp)
        finally:
            try:
                client.quit()
            except Exception:
                client.close()
    except smtplib.SMTPRecipientsRefused as exc:
        raise _Failed(f"recipient refused: {exc.recipients}") from exc
    except smtplib.SMTPResponseException as exc:
        if committing and exc.smtp_code >= 500:
            raise _Failed(f"refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
        if committing and exc.smtp_code >= 400:
            raise _Retry(f"temporary: {exc.smtp_code}") from exc   # a 4xx to DATA means not accepted
        if exc.smtp_code >= 500:
            raise _Failed(f"refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
        raise _Retry(f"temporary: {exc.smtp_code}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        if committing:
            raise _Uncertain(str(exc)) from exc
        raise _Retry(str(exc)) from exc
    return "sent"


class _Retry(Exception):
    pass


class _Uncertain(Exception):
    pass


class _Failed(Exception):
    pass


def deliver(instance, notice_id: int) -> str:
    with instance.session() as s:
        notice = s.get(Notice, notice_id, with_for_update=True)
        if notice is None or notice.state != "ready":
            return notice.state if notice else "missing"
        notice.state = "sending"
    try:
        with instance.session() as s:
            notice = s.get(Notice, notice_id)
            notice_channel = notice.channel
            if notice.channel == "victim":
                prepared = _victim_message(instance, s, notice)
                if prepared is None:
                    notice.state, notice.error = "failed", "no contact"
                    return notice.state
                to, raw = prepared
            else:
                to, raw = notice.recipient, open_archive(instance, notice)
    except Exception:                      # nothing went out: leave it for the next try
        with instance.session() as s:
            s.get(Notice, notice_id).state = "ready"
        raise
    sender = victim_sender(instance) if notice_channel == "victim" else (instance.settings.smtp_from
                                                                          or instance.settings.org_email)
    try:
        send_raw(instance, getaddresses([sender])[0][1] or sender, [a for _, a in getaddresses([to])], raw)
        state, error = "sent", None
    except _Retry as exc:
        state, error = "ready", str(exc)
    except _Uncertain as exc:
        state, error = "uncertain", str(exc)
    except _Failed as exc:
        state, error = "failed", str(exc)
    victim = None
    with instance.session() as s:
        notice = s.get(Notice, notice_id, with_for_update=True)
        if error and notice.channel == "victim":
            error = error.split(":", 1)[0]   # the server's words may hold her address: kept in no column
        notice.state, notice.error = state, error
        if state == "sent":
            notice.sent_at = utcnow()
            if notice.channel != "victim":
                victim = record_sent(instance, s, notice, actor="worker")
        elif notice.channel != "victim":
            event(s, notice.takedown_id, "send_" + state, "worker", notice=notice.id, error=(error or "")[:200])
    log.info("notice %s: %s", notice_id, state)
    if victim:
        enqueue(instance, victim)
    if state == "ready":
        raise RuntimeError(f"notice {notice_id} not sent yet ({error}); will retry")
    return state


def mark_sent(instance, notice_id: int, actor: str) -> str:
    """A contact-form route done by hand: staff say it went out."""
    with instance.session() as s:
        notice = s.get(Notice, notice_id, with_for_update=True)
        if notice is None:
            raise KeyError(notice_id)
        if notice.state in SENT_STATES:
            return notice.state
        if notice.state not in ("form_ready", "uncertain", "failed", "ready"):
            raise ValueError(f"notice {notice_id} is {notice.state}")
        notice.state = "form" if notice.channel == "form" else "sent"
        notice.sent_at = utcnow()
        victim = record_sent(instance, s, notice, actor=actor, by_hand=True)
        state = notice.state
    if victim:
        enqueue(instance, victim)
    return state


def record_sent(instance, session, notice: Notice, actor: str, by_hand: bool = False) -> int | None:
    """After a notice went out: the takedown is requested, its deadline set, a re-check scheduled.

    Returns the id of the victim's confirmation to send once this transaction commits (or None)."""
    takedown = session.get(Takedown, notice.takedown_id, with_for_update=True)
    case = session.get(Case, takedown.case_id)
    now = notice.sent_at or utcnow()          # the clocks start when it went out
    regime = regimes.get(notice.regime) if notice.route not in predict.PARALLEL else None
    legal = legal_window(regime)
    if legal is not None:
        notice.deadline_at = now + legal
        if takedown.legal_deadline_at is None:          # the first legal clock is what statistics count
            takedown.regime, takedown.legal_deadline_at = regime.id, notice.deadline_at
    if notice.route not in predict.PARALLEL:
        takedown.route = notice.route
        takedown.deadline_at = now + route_window(regime, case.category if case else None)
        takedown.proposal = None
        schedule_deadline_check(session, takedown.id, takedown.deadline_at)
    takedown.requested_at = takedown.requested_at or now
    if takedown.status in ("ongoing", "on_hold"):
        takedown.status = "requested"
    takedown.updated_at = now
    event(session, takedown.id, "sent", actor, notice=notice.id, route=notice.route, by_hand=by_hand,
          message_id=notice.message_id)
    # before the deadline: at half of a short window, else after a day
    before = min(timedelta(seconds=RECHECK_EVERY_S), (legal or timedelta(seconds=2 * RECHECK_EVERY_S)) / 2)
    schedule_recheck(session, takedown.id, now + before)
    if case is not None and notice.route not in predict.PARALLEL:
        return _queue_victim_confirmation(instance, session, case, notice)
    return None


def schedule_recheck(session, takedown_id: int, due_at) -> None:
    row = session.execute(select(Schedule).where(Schedule.kind == "recheck", Schedule.ref == str(takedown_id))
                          ).scalars().first()
    if row is None:
        session.add(Schedule(kind="recheck", ref=str(takedown_id), due_at=due_at, interval_s=RECHECK_EVERY_S))
    else:
        row.due_at = min(row.due_at, due_at)


def schedule_deadline_check(session, takedown_id: int, deadline_at) -> None:
    """A one-off re-check just after the route's deadline (kind "deadline"), beside the daily ones."""
    due = deadline_at + timedelta(minutes=1)
    row = session.execute(select(Schedule).where(Schedule.kind == "deadline", Schedule.ref == str(takedown_id))
                          ).scalars().first()
    if row is None:
        session.add(Schedule(kind="deadline", ref=str(takedown_id), due_at=due, interval_s=None))
    else:
        row.due_at = due


# --- the victim hears back ----------------------------------------------------------------------

VICTIM_TEXT = {
    "ja": ("{org}からのお知らせ",
           "{org}です。\n\nご相談いただいている件で、削除の依頼を1件送りました。\n"
           "結果がわかり次第、状況の確認ページに反映されます。ケース番号とパスフレーズで、いつでも確認できます。\n\n"
           "このメールに心当たりがない場合は、破棄してください。\n\n{org}\n{contact}\n"),
    "en": ("A message from {org}",
           "This is {org}.\n\nWe have sent one removal request about the matter you asked us to help with.\n"
           "Its result will show on the status page, which you can open at any time with your case number "
           "and passphrase.\n\nIf this message means nothing to you, please delete it.\n\n{org}\n{contact}\n"),
}


def victim_contact(instance, case: Case) -> str | None:
    from workers.cases.decrypt import case_details
    details = case_details(instance, case.id) or {}
    contact = details.get("contact") or {}
    email = (contact.get("email") or "").strip() if isinstance(contact, dict) else ""
    return email if re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+", email) else None


def _queue_victim_confirmation(instance, session, case: Case, notice: Notice) -> int | None:
    """A Notice row (channel victim, no address stored) per request; its Message-ID makes it unique."""
    if not case.details:
        return None
    try:
        if victim_contact(instance, case) is None:
            return None                   # she left no contact: nothing to send, nothing to keep
    except Exception:                     # keys locked here: the worker decides when it sends
        pass
    mid = f"<kesu.victim.{notice.id}.{hashlib.sha256(notice.message_id.encode()).hexdigest()[:12]}@{mail_domain(instance)}>"
    if session.execute(select(Notice.id).where(Notice.message_id == mid)).first():
        return None
    row = Notice(takedown_id=notice.takedown_id, route="victim", recipient="", language=case.language or "ja",
                 channel="victim", state="ready", message_id=mid)
    session.add(row)
    session.flush()
    return row.id


def _victim_message(instance, session, notice: Notice):
    takedown = session.get(Takedown, notice.takedown_id)
    case = session.get(Case, takedown.case_id) if takedown else None
    email = victim_contact(instance, case) if case else None
    if not email:
        return None
    lang = notice.language if notice.language in VICTIM_TEXT else "ja"
    subject, body = VICTIM_TEXT[lang]
    org = instance.settings.org_name
    contact = instance.settings.org_phone or instance.settings.org_email or ""
    msg = message(instance, email, subject.format(org=org), body.format(org=org, contact=contact), notice.message_id,
                  auto=True, sender=victim_sender(instance))
    return email, msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


# --- the sweep: nothing stays behind after a restart -----------------------------------------------

def pending(instance, older_than_s: int = 0) -> list[int]:
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with instance.session() as s:
        return list(s.execute(select(Notice.id).where(Notice.state == "ready", Notice.created_at <= cutoff)
                              .order_by(Notice.id)).scalars())


def sweep(ref: str = "") -> int:
    """Scheduled job: enqueue every notice still "ready" (lost from a flushed Redis, or after a retry)."""
    from workers.system.context import instance as current
    inst = current()
    n = 0
    for notice_id in pending(inst, older_than_s=30):
        n += enqueue(inst, notice_id)
    stale = utcnow() - timedelta(minutes=15)
    with inst.session() as s:
        for notice in s.execute(select(Notice).where(Notice.state == "sending", Notice.created_at <= stale)).scalars():
            notice.state, notice.error = "uncertain", "interrupted while sending"
    return n


# --- media of a takedown (for the re-check) --------------------------------------------------------

def attach_media(session, takedown: Takedown) -> None:
    """Fill takedown.media from its confirmed matches (media URL + keyed hash), once."""
    if takedown.media:
        return
    rows = session.execute(select(Media.url, Media.sha256_key).join(Match, Match.media_id == Media.id)
                           .join(Capture, Capture.id == Media.capture_id)
                           .where(Match.case_id == takedown.case_id, Match.state == "confirmed",
                                  (Capture.url == takedown.url) | (Capture.final_url == takedown.url)
                                  | (Media.url == takedown.url))).all()
    seen, media = set(), []
    for url, key in rows:
        if url not in seen:
            seen.add(url)
            media.append({"url": url, "key": key})
    if media:
        takedown.media = media
