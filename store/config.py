"""Settings: environment variables (KESU_*) win over the instance's config.toml.

The instance folder (KESU_INSTANCE, default ./instance) holds the SQLite database,
the key store, the encrypted blobs, server secrets and the private Redis socket.
"""
import hashlib
import os
import secrets
import tempfile
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass
class Settings:
    instance: Path
    database_url: str = ""
    redis_url: str = ""                      # empty: `kesu run` starts a private redis-server
    intake_host: str = "127.0.0.1"
    intake_port: int = 8000
    backoffice_host: str = "127.0.0.1"
    backoffice_port: int = 8001
    org_name: str = "kesu"                   # the organisation's own name, phone, e-mail and chat
    org_phone: str = ""                      # (a URL) are shown on every intake page: until name,
    org_email: str = ""                      # phone and e-mail are set, `kesu status` names a problem
    org_chat: str = ""
    org_address: str = ""                    # postal address, printed on every notice
    org_responsible: str = ""                # the named person responsible for notices (signs the accuracy statement)
    notice_capacity: str = "representative"  # who signs notices for her: representative (org_responsible) | lawyer
    notice_lawyer: str = ""                  # with notice_capacity = lawyer: the lawyer's name and bar (弁護士法72条)
    victim_mail_from: str = ""               # a neutral sender for mail to the victim ("Info <info@example.org>")
    crawl_allow_private: bool = False
    crawl_max_pages: int = 50
    crawl_max_bytes: int = 512 * 1024 * 1024
    crawl_max_seconds: int = 600
    crawl_delay: float = 1.0
    crawl_proxy: str = ""
    crawl_page_seconds: int = 60              # per page: time, bytes, scroll steps, quiet window
    crawl_page_bytes: int = 256 * 1024 * 1024
    crawl_max_scrolls: int = 40
    crawl_idle_seconds: float = 1.0
    crawl_max_segments: int = 400             # HLS/DASH segments kept per page
    crawl_faces: bool = True                  # look for faces in crawled media
    crawl_signal_processes: int = 0           # processes computing a page's media signals (0: one per core)
    patrol_every_s: int = 86400               # patrol defaults per domain (each domain may override)
    patrol_min_every_s: int = 3600
    patrol_pages: int = 20
    patrol_bytes: int = 64 * 1024 * 1024
    patrol_pages_day: int = 100
    patrol_detail_pages: int = 10             # detail pages followed from each changed listing page (0: none)
    patrol_seconds: float = 300               # wall time per run: one slow site costs only this
    patrol_robots: str = "record"             # record: note robots.txt and visit; obey: skip what it disallows
    patrol_robots_ttl: int = 86400
    patrol_queue_depth: int = 0               # 0: twice the crawl workers, at least 4
    patrol_seen_media: int = 5000             # already-fetched media URLs skipped per run (newest first)
    patrol_probe_bytes: int = 2 * 1024 * 1024
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    smtp_security: str = "starttls"          # starttls (required, verified) | tls (port 465) | none (plain, no password)
    smtp_ca_file: str = ""                    # PEM of the CA that signed the mail server's certificate (default: the system's)
    tsa_url: str = ""
    tsa_ca_file: str = ""                     # PEM of the TSA's CA: tokens are checked against it
    max_submission_bytes: int = 4 * 1024 * 1024
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    keystore_backup_days: int = 30
    retention_unmatched_days: int = 180       # signals of crawled media that matched nothing
    retention_closed_case_days: int = 90      # a case she asked to close, before it is withdrawn
    retention_notice_archive_days: int = 1095 # archived copies of sent notices
    retention_log_days: int = 30
    retention_continuation_days: int = 365    # the yearly "shall we go on?" question
    retention_answer_days: int = 30           # no answer: on hold (nothing deleted)
    keystore: str = ""                       # empty: <instance>/keystore
    blob_store: str = ""                     # database | folder; empty: database on PostgreSQL, else folder
    job_lease_seconds: int = 60               # a claimed job renews its lease; a killed one is retried after it
    job_max_attempts: int = 5                 # then the job stops and the health page shows its error
    job_retry_seconds: int = 30               # delay before the 2nd attempt, doubling after each failure
    key_kdf: str = "moderate"               # Argon2id cost of the key passphrase: moderate|interactive (tests)
    extra: dict = field(default_factory=dict)

    def missing_contact(self) -> list[str]:
        """The organisation's contact fields a victim needs and that are still unset."""
        missing = [name for name in ("org_phone", "org_email") if not getattr(self, name).strip()]
        if not self.org_name.strip() or self.org_name.strip() == "kesu":
            missing.insert(0, "org_name")
        return missing

    @property
    def keystore_dir(self) -> Path:
        """The case keys: apart from the database; on several machines, one shared folder."""
        return Path(self.keystore) if self.keystore else self.instance / "keystore"

    @property
    def blob_dir(self) -> Path:
        return self.instance / "blobs"

    @property
    def blobs_in_database(self) -> bool:
        """Evidence blobs in the database (the default on PostgreSQL, so every machine reads what
        another wrote), or in the instance folder (the single-machine default on SQLite)."""
        if self.blob_store:
            return self.blob_store == "database"
        return self.database_url.startswith("postgresql")

    @property
    def secrets_dir(self) -> Path:
        return self.instance / "secrets"

    @property
    def log_dir(self) -> Path:
        return self.instance / "logs"

    @property
    def redis_socket(self) -> Path:
        """The private Redis socket; a short temporary path when the instance path is too long."""
        sock = self.instance / "redis.sock"
        if len(str(sock)) < 100:
            return sock
        tag = hashlib.sha256(str(self.instance.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"kesu-{tag}.sock"

    def secret(self, name: str, size: int = 32) -> bytes:
        """A server secret (pepper, session key) from the instance, made on first use, mode 0600."""
        path = self.secrets_dir / name
        if not path.exists():
            self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(size))
        return path.read_bytes()


def _coerce(kind, value):
    if kind is bool:
        return str(value).strip().lower() in ("1", "true", "yes", "on")
    if kind is int:
        return int(float(value))      # "4.0" from the environment is 4
    if kind is float:
        return float(value)
    return str(value)


def load(instance: str | os.PathLike | None = None, **overrides) -> Settings:
    root = Path(instance or os.environ.get("KESU_INSTANCE") or "instance").absolute()
    values: dict = {}
    config_file = root / "config.toml"
    if config_file.exists():
        values.update(tomllib.loads(config_file.read_text("utf-8")))
    known = {f.name: f for f in fields(Settings) if f.name not in ("instance", "extra")}
    for name, _f in known.items():
        env = os.environ.get("KESU_" + name.upper())
        if env is not None:
            values[name] = env
    values.update(overrides)
    settings = Settings(instance=root)
    for name, value in values.items():
        if name in known:
            setattr(settings, name, _coerce(known[name].type, value))
        else:
            settings.extra[name] = value
    if not settings.database_url:
        settings.database_url = f"sqlite:///{root / 'kesu.db'}"
    return settings
