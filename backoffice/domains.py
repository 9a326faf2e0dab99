"""The domain database: CSV import (bulk upsert) and the staff pages to search and edit it.

`import_csv` reads UTF-8 (with or without BOM) and CP932 files whose header row names the
columns (English or Japanese names, any order, unknown columns ignored). Good rows are
upserted in chunks with one INSERT ... ON CONFLICT per chunk (SQLite and PostgreSQL), so
17,000 rows load in well under a second or two; bad rows are reported by line and reason
and do not stop the good ones.
"""
import codecs
import csv
import io
import re
from dataclasses import dataclass, field

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import func, or_, select

from backoffice import current_instance, login_required
from store import audit
from store.models import Domain, Takedown, TakedownEvent, utcnow

# --- columns ----------------------------------------------------------------------------------

FIELDS = ("domain", "site_name", "kind", "country", "language", "contact_email", "contact_form", "hosting", "notes")
_LIMITS = {"domain": 253, "site_name": 200, "kind": 50, "country": 2, "language": 10, "contact_email": 254,
           "hosting": 200}

ALIASES = {
    "domain": "domain", "domainname": "domain", "host": "domain", "ドメイン": "domain", "ドメイン名": "domain",
    "sitename": "site_name", "site": "site_name", "name": "site_name", "サイト名": "site_name", "サイト": "site_name",
    "kind": "kind", "type": "kind", "sitekind": "kind", "category": "kind", "種類": "kind", "種別": "kind",
    "サイト種別": "kind",
    "country": "country", "countrycode": "country", "国": "country", "国名": "country", "国コード": "country",
    "language": "language", "lang": "language", "言語": "language",
    "contactemail": "contact_email", "email": "contact_email", "contact": "contact_email", "abuseemail": "contact_email",
    "連絡先メール": "contact_email", "連絡先メールアドレス": "contact_email", "メール": "contact_email",
    "メールアドレス": "contact_email",
    "contactformurl": "contact_form", "contactform": "contact_form", "formurl": "contact_form",
    "問い合わせフォーム": "contact_form", "問合せフォーム": "contact_form", "お問い合わせフォーム": "contact_form",
    "問い合わせフォームurl": "contact_form", "連絡フォーム": "contact_form",
    "hostingprovider": "hosting", "hosting": "hosting", "hoster": "hosting", "ホスティング": "hosting",
    "ホスティング事業者": "hosting", "ホスティングプロバイダ": "hosting", "ホスティングプロバイダー": "hosting",
    "notes": "notes", "note": "notes", "memo": "notes", "メモ": "notes", "備考": "notes",
    # what chooses the legal regimes of its notices (workers/takedown/regimes.py)
    "designated": "designated", "designatedplatform": "designated", "指定": "designated",
    "指定プラットフォーム": "designated", "大規模プラットフォーム": "designated",
    "大規模特定電気通信役務提供者": "designated",
    "dsa": "dsa", "dsacoverage": "dsa", "dsa対象": "dsa", "デジタルサービス法": "dsa", "デジタルサービス法対象": "dsa",
    "takeitdown": "take_it_down", "takeitdownact": "take_it_down", "takeitdown対象": "take_it_down",
    "takeitdown法": "take_it_down", "takeitdown法対象": "take_it_down",
}
REGIME_FLAGS = ("designated", "dsa", "take_it_down")
_YES = {"1", "true", "yes", "y", "on", "はい", "○", "〇", "✓", "対象", "該当"}
_NO = {"", "0", "false", "no", "n", "off", "いいえ", "×", "✕", "-", "対象外", "非該当"}

try:        # patrol settings (seeds, frequency, budgets, gate) ride along in the same file
    from workers.capture.patrol import CSV_ALIASES as _PATROL_ALIASES
    from workers.capture.patrol import PATROL_FIELDS, clean_patrol
    ALIASES.update(_PATROL_ALIASES)
except ImportError:   # pragma: no cover
    PATROL_FIELDS, clean_patrol = (), (lambda values: {})

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")


class ImportError_(ValueError):
    """The file as a whole cannot be read (encoding, no header, no domain column)."""


@dataclass
class ImportReport:
    encoding: str = ""
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    bad: list = field(default_factory=list)          # [(line, reason)]
    duplicates: list = field(default_factory=list)   # [(line, domain)]: a later line with the same domain wins
    ignored_columns: list = field(default_factory=list)

    @property
    def good(self) -> int:
        return self.inserted + self.updated


def _key(header: str) -> str:
    return re.sub(r"[\s_\-・/()（）]+", "", header.strip().lstrip("\ufeff")).lower()


def normalize_domain(text: str) -> str:
    """'https://WWW.Example.com/path' -> 'www.example.com'; IDN to punycode; raises ValueError."""
    d = (text or "").strip()
    d = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", d)
    d = d.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    d = d.rsplit("@", 1)[-1]
    d = re.sub(r":\d+$", "", d).strip(".").lower()
    if not d:
        raise ValueError("empty domain")
    try:
        d = d.encode("idna").decode("ascii") if not d.isascii() else d
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain name: {text!r}") from exc
    labels = d.split(".")
    if len(d) > 253 or len(labels) < 2 or not all(_LABEL.match(lb) for lb in labels) or labels[-1].isdigit():
        raise ValueError(f"not a valid domain name: {text!r}")
    return d


def display_domain(d: str) -> str:
    try:
        return d.encode("ascii").decode("idna")
    except UnicodeError:
        return d


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 with BOM, UTF-8, then CP932 (Shift_JIS as Windows writes it)."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):].decode("utf-8"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp932"), "cp932"
    except UnicodeDecodeError as exc:
        raise ImportError_(f"the file is neither UTF-8 nor CP932 (byte {exc.start})") from exc


def clean_row(values: dict) -> dict:
    """Validated, normalised column values; raises ValueError naming the problem."""
    row = {k: (values.get(k) or "").strip() for k in FIELDS}
    row["domain"] = normalize_domain(row["domain"])
    if row["country"]:
        c = row["country"].upper()
        if not re.fullmatch(r"[A-Z]{2}", c):
            raise ValueError(f"country must be a two-letter code: {row['country']!r}")
        row["country"] = c
    if row["contact_email"]:
        emails = [e.strip() for e in re.split(r"[;,\s]+", row["contact_email"]) if e.strip()]
        for e in emails:
            if not _EMAIL.match(e):
                raise ValueError(f"not an e-mail address: {e!r}")
        row["contact_email"] = emails[0].lower() if len(emails) == 1 else ", ".join(emails).lower()
    if row["contact_form"] and not re.match(r"^https?://[^\s/]+", row["contact_form"], re.I):
        raise ValueError(f"contact form must be an http(s) URL: {row['contact_form']!r}")
    row["kind"] = row["kind"].lower()
    row["language"] = row["language"].lower()
    for name, limit in _LIMITS.items():
        if len(row[name]) > limit:
            raise ValueError(f"{name} longer than {limit} characters")
    row.update(clean_patrol(values))        # only the patrol columns the file has
    row.update(clean_flags(values))         # only the regime flags the file has
    return row


def clean_flags(values: dict) -> dict:
    """The regime flags the row has (a file without the column leaves the domain's as they are);
    yes/no in English or Japanese, empty is no; anything else raises ValueError naming the column."""
    out = {}
    for name in REGIME_FLAGS:
        if name in values:
            value = (values[name] or "").strip().lower()
            if value in _YES:
                out[name] = True
            elif value in _NO:
                out[name] = False
            else:
                raise ValueError(f"{name} must be yes or no (はい/いいえ, 1/0): {values[name]!r}")
    return out


def read_rows(text: str, report: ImportReport):
    """Yield (line, cleaned row) for good rows; bad ones go to the report."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportError_("the file is empty") from None
    mapping = {}
    for i, name in enumerate(header):
        target = ALIASES.get(_key(name))
        if target and target not in mapping.values():
            mapping[i] = target
        elif name.strip():
            report.ignored_columns.append(name.strip())
    if "domain" not in mapping.values():
        raise ImportError_("no 'domain' column in the header row (columns: " + ", ".join(header) + ")")
    width = len(header)
    for record in reader:
        line = reader.line_num
        if not any(v.strip() for v in record):
            continue
        report.rows += 1
        if len(record) > width and any(v.strip() for v in record[width:]):
            report.bad.append((line, f"{len(record)} fields, header has {width}"))
            continue
        try:
            yield line, clean_row({mapping[i]: v for i, v in enumerate(record) if i in mapping})
        except ValueError as exc:
            report.bad.append((line, str(exc)))


def _upsert(session, rows: list[dict]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    for r in rows:
        r["updated_at"] = now
    stmt = insert(Domain)
    patrol = [c for c in PATROL_FIELDS if any(c in r for r in rows)]
    flags = [c for c in REGIME_FLAGS if any(c in r for r in rows)]
    for r in rows:
        for c in patrol:
            r.setdefault(c, None)       # a short line: its empty cells mean "the default"
        for c in flags:
            r.setdefault(c, False)
    cols = {c: getattr(stmt.excluded, c) for c in (*FIELDS[1:], *patrol, *flags, "updated_at")}
    session.execute(stmt.on_conflict_do_update(index_elements=[Domain.domain], set_=cols), rows)


def import_csv(instance, data: bytes, progress=None, chunk: int = 2000, actor: str = "cli") -> ImportReport:
    """Upsert the good rows of a CSV file's bytes; progress(n) is called as rows are written."""
    report = ImportReport()
    text, report.encoding = decode(data)
    rows: dict[str, dict] = {}
    seen_line: dict[str, int] = {}
    for line, row in read_rows(text, report):
        if row["domain"] in rows:
            report.duplicates.append((line, row["domain"]))
        rows[row["domain"]] = row
        seen_line[row["domain"]] = line
    good = list(rows.values())
    with instance.session() as s:
        names = [r["domain"] for r in good]
        existing = set()
        for i in range(0, len(names), 900):
            existing.update(s.execute(select(Domain.domain).where(Domain.domain.in_(names[i:i + 900]))).scalars())
        for i in range(0, len(good), chunk):
            part = good[i:i + chunk]
            _upsert(s, part)
            if progress:
                progress(len(part))
        report.updated = len(existing)
        report.inserted = len(good) - len(existing)
        audit.record(s, actor, "domains_import", "domains", inserted=report.inserted, updated=report.updated,
                     bad=len(report.bad))
    return report


# --- pages ------------------------------------------------------------------------------------

bp = Blueprint("domains", __name__, url_prefix="/domains")
PAGE = 50


@bp.route("/")
@login_required()
def index():
    q = request.args.get("q", "").strip()
    page = max(1, request.args.get("page", 1, type=int))
    with current_instance().session() as s:
        stmt = select(Domain)
        if q:
            like = f"%{q.lower()}%"
            try:
                like_puny = f"%{normalize_domain(q)}%"
            except ValueError:
                like_puny = like
            stmt = stmt.where(or_(Domain.domain.like(like), Domain.domain.like(like_puny),
                                  func.lower(Domain.site_name).like(like), func.lower(Domain.hosting).like(like)))
        total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar()
        rows = s.execute(stmt.order_by(Domain.domain).offset((page - 1) * PAGE).limit(PAGE)).scalars().all()
    return render_template("backoffice/domains.html", rows=rows, q=q, page=page, total=total, per_page=PAGE,
                           display_domain=display_domain)


EDITABLE = FIELDS[1:]


@bp.get("/<int:domain_id>")
@login_required()
def edit(domain_id):
    return _edit_page(domain_id)


@bp.post("/<int:domain_id>")
@login_required("staff")          # lawyers read the domain database, never change it
def save(domain_id):
    return _edit_page(domain_id)


def _edit_page(domain_id):
    instance = current_instance()
    errors = {}
    with instance.session() as s:
        domain = s.get(Domain, domain_id)
        if domain is None:
            abort(404)
        if request.method == "POST":
            values = {"domain": domain.domain, **{k: request.form.get(k, "") for k in EDITABLE},
                      **{k: request.form.get(k, "0") for k in REGIME_FLAGS}}
            try:
                cleaned = clean_row(values)
            except ValueError as exc:
                errors["form"] = str(exc)
            else:
                for k in (*EDITABLE, *REGIME_FLAGS):
                    setattr(domain, k, cleaned[k])
                domain.updated_at = utcnow()
                audit.record(s, f"staff:{g.staff.id}", "domain_edit", f"domain:{domain.id}")
                flash(_("Saved."), "ok")
                return redirect(url_for("domains.edit", domain_id=domain.id))
        takedowns = s.execute(select(Takedown).where(Takedown.domain_id == domain.id)
                              .order_by(Takedown.id.desc()).limit(50)).scalars().all()
        counts = dict(s.execute(select(Takedown.status, func.count()).where(Takedown.domain_id == domain.id)
                                .group_by(Takedown.status)).all())
        events = s.execute(select(TakedownEvent).join(Takedown, Takedown.id == TakedownEvent.takedown_id)
                           .where(Takedown.domain_id == domain.id, TakedownEvent.kind.in_(("check", "notice", "sent")))
                           .order_by(TakedownEvent.id.desc()).limit(20)).scalars().all()
    from backoffice.takedown import prediction_text
    return render_template("backoffice/domains_edit.html", domain=domain, errors=errors, takedowns=takedowns,
                           prediction=prediction_text(domain.prediction if domain else None),
                           counts=counts, events=events, display_domain=display_domain), (400 if errors else 200)


@bp.route("/import", methods=["GET", "POST"])
@login_required("admin")
def upload():
    """The same import as `kesu domains import`, from the browser (admins)."""
    report, error = None, None
    if request.method == "POST":
        f = request.files.get("file")
        if f is None or not f.filename:
            error = _("Choose a CSV file.")
        else:
            try:
                report = import_csv(current_instance(), f.read(), actor=f"staff:{g.staff.id}")
            except ImportError_ as exc:
                error = str(exc)
    return render_template("backoffice/domains_import.html", report=report, error=error), (400 if error else 200)


@bp.route("/<int:domain_id>/contacts", methods=["POST"])
@login_required("staff")
def lookup_contacts(domain_id):
    """Look up the abuse contacts (RDAP, security.txt) in a worker."""
    instance = current_instance()
    with instance.session() as s:
        if s.get(Domain, domain_id) is None:
            abort(404)
    from workers import jobs
    if jobs.enqueue(instance.settings, "contacts", str(domain_id), job_id=f"contacts-{domain_id}"):
        flash(_("Looking up the abuse contacts; reload in a minute."), "ok")
    else:
        flash(_("The queue is not reachable; try again later."), "error")
    return redirect(url_for("domains.edit", domain_id=domain_id))


@bp.route("/add", methods=["POST"])
@login_required("staff")
def add():
    """One domain typed in by staff (the CSV import is for many); the same validation as a CSV row."""
    values = {k: request.form.get(k, "") for k in ("domain", "site_name", "contact_email", "contact_form",
                                                   "country", "language")}
    if request.form.get("patrol_seeds", "").strip():
        values["patrol_seeds"] = request.form["patrol_seeds"]
    try:
        row = clean_row(values)
    except ValueError as exc:
        flash(_("Not added: %(reason)s", reason=str(exc)), "error")
        return redirect(url_for("domains.index"))
    instance = current_instance()
    with instance.session() as s:
        existing = s.execute(select(Domain).where(Domain.domain == row["domain"])).scalars().first()
        if existing is not None:
            flash(_("%(domain)s is already in the domain database.", domain=row["domain"]), "error")
            return redirect(url_for("domains.edit", domain_id=existing.id))
        domain = Domain(**{k: v for k, v in row.items() if v is not None}, updated_at=utcnow())
        s.add(domain)
        s.flush()
        domain_id = domain.id
        audit.record(s, f"staff:{g.staff.id}", "domain_add", f"domain:{domain_id}")
    flash(_("%(domain)s added.", domain=row["domain"]), "ok")
    return redirect(url_for("domains.edit", domain_id=domain_id))


@bp.route("/crawl", methods=["POST"])
@login_required("staff")
def crawl_url():
    """Capture one URL now (the same job as `kesu crawl URL`): its page and same-site links, matched
    against every case; matches arrive in the review queue."""
    from workers import jobs
    from workers.capture.crawl import create_job
    url = request.form.get("url", "").strip()
    depth = 1 if request.form.get("depth") == "1" else 0
    if not re.match(r"^https?://[^\s/]+", url, re.I) or len(url) > 2000:
        flash(_("Not crawled: a URL starting with http:// or https:// is needed."), "error")
        return redirect(url_for("domains.index"))
    instance = current_instance()
    job_id = create_job(instance, url, depth=depth, requested_by=f"staff:{g.staff.id}")
    with instance.session() as s:
        audit.record(s, f"staff:{g.staff.id}", "crawl_request", f"crawl:{job_id}")
    queued = jobs.enqueue(instance.settings, "crawl", job_id, job_id=f"kesu-crawl-{job_id}",
                          job_timeout=instance.settings.crawl_max_seconds + 300)
    flash(_("Crawl %(id)d started: matches will appear in the review queue.", id=job_id) if queued else
          _("Crawl %(id)d is saved but the queue is not reachable: start kesu run, then try again.", id=job_id),
          "ok" if queued else "error")
    return redirect(url_for("domains.index"))
