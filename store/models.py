"""The database schema: one concept, one table, one name.

Nothing here holds a plaintext signal, a case number, a passphrase or an IP address
of a victim or staff member: signals and labels are ciphertext under the case key,
case numbers are keyed hashes, passphrases and passwords Argon2id hashes.
"""
from datetime import date, datetime, timezone

from sqlalchemy import JSON, Boolean, Date, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def today() -> date:
    return utcnow().date()


class Base(DeclarativeBase):
    pass


class OrgKey(Base):
    """The org key bundle (crypto.keys.wrap): public halves in the clear, private halves wrapped."""
    __tablename__ = "org_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bundle: Mapped[dict] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class InstanceMark(Base):
    """Fingerprints of what lives beside the database in each machine's instance folder (server
    secrets, the key store's identity), so a machine with a missing or different copy refuses to
    start instead of silently making new ones. A fingerprint reveals nothing of its secret."""
    __tablename__ = "instance_marks"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BlobRow(Base):
    """An evidence blob's ciphertext, when blobs live in the database (PostgreSQL: every machine
    reads what another wrote, written in the same transaction as the rows that name it)."""
    __tablename__ = "blobs"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number_hash: Mapped[str] = mapped_column(String(64), unique=True)      # HMAC(pepper, case number)
    passphrase_hash: Mapped[str] = mapped_column(String(200))              # Argon2id(HMAC(pepper, passphrase))
    status: Mapped[str] = mapped_column(String(20), default="received")   # received|searching|found|requested|removed|withdrawn
    category: Mapped[str | None] = mapped_column(String(20))              # known once taken in
    language: Mapped[str | None] = mapped_column(String(5))
    details: Mapped[bytes | None] = mapped_column(LargeBinary)            # contact, consent, known URLs: under the case key
    created_on: Mapped[date] = mapped_column(Date, default=today)         # a day, never a time
    updated_on: Mapped[date] = mapped_column(Date, default=today)
    withdrawn_on: Mapped[date | None] = mapped_column(Date)
    # Retention (workers/retention.py): days only. A yearly question "shall we go on?"; no
    # answer in time puts the case on hold (never deleted without her word); closed on her word.
    continuation_asked_on: Mapped[date | None] = mapped_column(Date)
    continued_on: Mapped[date | None] = mapped_column(Date)
    held_on: Mapped[date | None] = mapped_column(Date)
    closed_on: Mapped[date | None] = mapped_column(Date)
    # An imported hash bank (workers/banks.py) rather than a victim's case: its name.
    bank: Mapped[str | None] = mapped_column(String(100))
    # X25519 public half derived from the case key (store.casekeys): what is hers is sealed to it.
    seal_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    items: Mapped[list["Item"]] = relationship(back_populates="case", cascade="all, delete-orphan")


class Submission(Base):
    """A sealed blob as it arrived; deleted once taken in (re-encrypted under the case key)."""
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(String(32))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    received_on: Mapped[date] = mapped_column(Date, default=today)


class Item(Base):
    """One file the victim chose ("p1", "v2", "s1"); its label is ciphertext."""
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("case_id", "item"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    item: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(10))                         # photo|video|selfie
    label: Mapped[bytes | None] = mapped_column(LargeBinary)
    case: Mapped[Case] = relationship(back_populates="items")


class Signal(Base):
    """One signal (PDQ, hash, vPDQ frames, face descriptor) as ciphertext under the case key."""
    __tablename__ = "signals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    item: Mapped[str] = mapped_column(String(20))
    type: Mapped[str] = mapped_column(String(10))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class Staff(Base):
    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    totp_secret: Mapped[bytes] = mapped_column(LargeBinary)                # ciphertext under a server secret
    role: Mapped[str] = mapped_column(String(10))                         # admin|staff|lawyer
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_totp_step: Mapped[int] = mapped_column(Integer, default=0)       # a used code is never accepted again
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    throttled_until: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StaffSession(Base):
    """Server-side staff sessions; the cookie carries a token whose SHA-256 is the id."""
    __tablename__ = "staff_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuditEntry(Base):
    """Append-only, hash-chained: who did what to which internal id. Never content."""
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String(100), default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class CrawlJob(Base):
    __tablename__ = "crawl_jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    depth: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default="queued")     # queued|running|done|error
    requested_by: Mapped[str] = mapped_column(String(100), default="")
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    stats: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Capture(Base):
    """One page as a real browser loaded it. Evidence files are encrypted blobs."""
    __tablename__ = "captures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("crawl_jobs.id", ondelete="SET NULL"), index=True)
    url: Mapped[str] = mapped_column(Text)
    final_url: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(10))                       # ok|error|limit
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    server_ip: Mapped[str | None] = mapped_column(String(64))             # of the crawled site: evidence
    redirects: Mapped[list] = mapped_column(JSON, default=list)
    captured_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    data_key: Mapped[bytes | None] = mapped_column(LargeBinary)           # legacy: sealed to the org key (now CaptureKey)
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)            # artifact -> blob name, sha256
    media: Mapped[list["Media"]] = relationship(back_populates="capture", cascade="all, delete-orphan")


class Media(Base):
    """A response body the page loaded: its signals encrypted, its bytes kept only as evidence."""
    __tablename__ = "media"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    capture_id: Mapped[int] = mapped_column(ForeignKey("captures.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    sha256_key: Mapped[str] = mapped_column(String(64), index=True)       # HMAC(pepper, sha256): lookups without the hash
    mime: Mapped[str] = mapped_column(String(100), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    signals: Mapped[bytes | None] = mapped_column(LargeBinary)            # under the org data key
    blob: Mapped[str | None] = mapped_column(String(64))                  # kept bytes (matched media only)
    # A matched media's signals under its capture's data key (the org-sealed `signals` dropped).
    case_signals: Mapped[bytes | None] = mapped_column(LargeBinary)
    capture: Mapped[Capture] = relationship(back_populates="media")


class CaptureKey(Base):
    """A capture's data key sealed to the seal key of one case it matched (store.casekeys).
    Gone with the case; once the last is gone, nothing of the capture opens."""
    __tablename__ = "capture_keys"
    __table_args__ = (UniqueConstraint("capture_id", "case_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    capture_id: Mapped[int] = mapped_column(ForeignKey("captures.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


# What a Match row keeps of the matcher's candidate: item ids, variants, shares and a video's
# second, never a signal (crawler and matcher both write rows).
MATCH_EVIDENCE_KEYS = ("item", "variant", "query_variant", "query_share", "target_share", "faces_agreeing",
                       "query_faces", "second", "face_closer", "cohort")


class Match(Base):
    __tablename__ = "matches"
    __table_args__ = (UniqueConstraint("case_id", "media_id", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))                   # pdq|md5|sha256|vpdq|frame|face
    distance: Mapped[float] = mapped_column(Float, default=0.0)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    state: Mapped[str] = mapped_column(String(10), default="new")         # new|confirmed|rejected|unsure
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # What the matcher saw (item id, PDQ variants, vPDQ shares, agreeing faces): never a signal.
    evidence: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("matches.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    decision: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Domain(Base):
    __tablename__ = "domains"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    site_name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(50), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    language: Mapped[str] = mapped_column(String(10), default="")
    contact_email: Mapped[str] = mapped_column(String(254), default="")
    contact_form: Mapped[str] = mapped_column(Text, default="")
    hosting: Mapped[str] = mapped_column(String(200), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    contacts: Mapped[dict | None] = mapped_column(JSON)                   # abuse contacts found (RDAP, security.txt)
    # What chooses the legal regimes of its notices (workers/takedown/regimes.py, regimes/*.toml):
    # designated: a designated large platform (JP platform act); dsa: a hosting service offered in the
    # EU (DSA art. 16); take_it_down: a covered platform under the US TAKE IT DOWN Act.
    designated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    dsa: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    take_it_down: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    prediction: Mapped[dict | None] = mapped_column(JSON)                 # workers.takedown.predict: compliance estimate
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Patrol (workers.capture.patrol): NULL means "the instance's default" for every setting here.
    patrol_seeds: Mapped[list | None] = mapped_column(JSON)               # front page, newest uploads, listings
    patrol_every_s: Mapped[int | None] = mapped_column(Integer)           # how often
    patrol_pages: Mapped[int | None] = mapped_column(Integer)             # pages per run
    patrol_bytes: Mapped[int | None] = mapped_column(Integer)             # bytes per run
    patrol_pages_day: Mapped[int | None] = mapped_column(Integer)         # pages per 24 hours
    patrol_next: Mapped[str | None] = mapped_column(String(200))          # CSS selector of a listing's "next" link
    patrol_gate: Mapped[str | None] = mapped_column(String(200))          # CSS selector to click (age gate, cookie wall)
    patrol_cookie: Mapped[str | None] = mapped_column(String(500))        # cookie(s) to set: "name=value; name2=value2"
    patrol_enabled: Mapped[bool | None] = mapped_column(Boolean)          # NULL: on
    next_patrol_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    last_patrol_at: Mapped[datetime | None] = mapped_column(DateTime)
    patrol_lease_until: Mapped[datetime | None] = mapped_column(DateTime)  # a run is queued or running until then
    patrol_robots: Mapped[dict | None] = mapped_column(JSON)              # robots.txt as last fetched: rules, time


class Takedown(Base):
    """One URL of one case to get removed, followed until it is gone."""
    __tablename__ = "takedowns"
    __table_args__ = (UniqueConstraint("case_id", "url"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id", ondelete="SET NULL"))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="ongoing")    # requested|removed|partly_removed|still_up|on_hold|ongoing
    route: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    media: Mapped[list | None] = mapped_column(JSON)                      # [{"url", "key"}]: key = HMAC(pepper, sha256)
    requested_at: Mapped[datetime | None] = mapped_column(DateTime)       # first notice sent (clock of the survival estimate)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime)        # when the current route is overdue
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)        # found removed
    checked_at: Mapped[datetime | None] = mapped_column(DateTime)
    proposal: Mapped[str | None] = mapped_column(String(20))              # next route proposed once overdue
    regime: Mapped[str | None] = mapped_column(String(40))                # the regime of its first legal notice
    legal_deadline_at: Mapped[datetime | None] = mapped_column(DateTime)  # that notice's legal deadline (statistics)


class Notice(Base):
    __tablename__ = "notices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    takedown_id: Mapped[int] = mapped_column(ForeignKey("takedowns.id", ondelete="CASCADE"), index=True)
    route: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(254), default="")
    language: Mapped[str] = mapped_column(String(5), default="ja")
    message_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    archived: Mapped[bytes | None] = mapped_column(LargeBinary)           # copy of what was sent, sealed to the case
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    state: Mapped[str] = mapped_column(String(10), default="ready")      # ready|sending|sent|form_ready|form|uncertain|failed
    channel: Mapped[str] = mapped_column(String(10), default="email")     # email|form|victim
    created_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow)
    error: Mapped[str | None] = mapped_column(Text)
    regime: Mapped[str | None] = mapped_column(String(40))                # the regime the notice cites
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime)        # its legal deadline, once sent


class TakedownTally(Base):
    """Counts that outlive a withdrawn case: its takedowns by year, category, domain and status."""
    __tablename__ = "takedown_tallies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    year: Mapped[int] = mapped_column(Integer, index=True)
    category: Mapped[str] = mapped_column(String(20), default="")
    domain: Mapped[str] = mapped_column(String(253), default="")
    status: Mapped[str] = mapped_column(String(20))
    count: Mapped[int] = mapped_column(Integer, default=0)
    # Under a legal regime: which, and removed within/after its deadline, overdue or pending (store.tally).
    regime: Mapped[str] = mapped_column(String(40), default="", server_default="")
    legal: Mapped[str] = mapped_column(String(10), default="", server_default="")


class TakedownEvent(Base):
    """What happened to one takedown: route chosen, notice sent, check outcome, proposal. No content."""
    __tablename__ = "takedown_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    takedown_id: Mapped[int] = mapped_column(ForeignKey("takedowns.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))                         # route|notice|sent|check|status|proposal|reupload
    actor: Mapped[str] = mapped_column(String(100), default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class Schedule(Base):
    """Timed work lives here, not in Redis: a Redis restart loses nothing."""
    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("kind", "ref"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    ref: Mapped[str] = mapped_column(String(100), default="")
    due_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    interval_s: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime)


class JobRun(Base):
    """One unit of queued work (a crawl, a take-in, a notice...): the row is the truth, Redis only
    carries its wake-up. A delivery claims the row with a lease and an attempt (workers.system.runs),
    so two deliveries make one set of effects, a killed worker's row is taken up again when its
    lease runs out, and a run that keeps failing stops after a bounded number of attempts."""
    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("name", "ref"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(30))                          # a job name of workers.jobs
    ref: Mapped[str] = mapped_column(String(100), default="")              # its argument: an internal id
    state: Mapped[str] = mapped_column(String(10), default="queued", index=True)   # queued|running|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    wake_id: Mapped[str | None] = mapped_column(String(100))               # the RQ job that carries its wake-up
    options: Mapped[dict] = mapped_column(JSON, default=dict)              # RQ options (timeouts) for re-wakes
    error: Mapped[str | None] = mapped_column(Text)                        # the last attempt's real error
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PatrolRun(Base):
    """One patrol of one domain: what it cost (pages, bytes), what it found, what stopped it."""
    __tablename__ = "patrol_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("crawl_jobs.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(10), default="running")   # running|ok|partial|timeout|error
    pages: Mapped[int] = mapped_column(Integer, default=0)                # pages loaded in the browser
    probes: Mapped[int] = mapped_column(Integer, default=0)               # conditional requests made
    unchanged: Mapped[int] = mapped_column(Integer, default=0)            # pages found unchanged (304, same hash)
    fetched: Mapped[int] = mapped_column(Integer, default=0)              # responses with a body (pages + probes + robots)
    bytes: Mapped[int] = mapped_column(Integer, default=0)                # bytes received, all of it
    media: Mapped[int] = mapped_column(Integer, default=0)
    skipped_media: Mapped[int] = mapped_column(Integer, default=0)        # already seen: not fetched again
    matches: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    blocked: Mapped[int] = mapped_column(Integer, default=0)              # refused, robots, 401/403/429/451
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)              # errors, blocked URLs, gate, robots, stop


class PatrolPage(Base):
    """What the patrol knows of one page it visits: validators and content hash, for the next run."""
    __tablename__ = "patrol_pages"
    __table_args__ = (UniqueConstraint("domain_id", "url_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    url_key: Mapped[str] = mapped_column(String(64))                      # SHA-256 of the URL
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(300))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    content_hash: Mapped[str | None] = mapped_column(String(64))          # of the page's links and media URLs
    status: Mapped[int | None] = mapped_column(Integer)
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime)
    changed_at: Mapped[datetime | None] = mapped_column(DateTime)
