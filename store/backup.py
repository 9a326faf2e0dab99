"""Backups and restores of an instance, with the key store kept apart (DESIGN §3).

`create(instance, root)` writes two folders under `root`:

* `kesu-<stamp>/`: the database, the encrypted blobs (ciphertext, copied as they are), the
  server secrets, config.toml and anything else in the instance folder, except the key
  store, logs and sockets. A database backup alone decrypts nothing: the case keys are
  not in it.
* `keystore-<stamp>/`: the key store (case keys, each sealed to the org key). These are
  kept only `settings.keystore_backup_days`: every `create` destroys (overwrites, then
  unlinks) key-store backups in `root` older than that. Once the last key-store backup
  taken before a withdrawal is gone, that case cannot be decrypted from any backup.

The database: SQLite through the online backup API (`sqlite3.Connection.backup`, a
consistent copy while the system runs); PostgreSQL as a logical dump of kesu's tables made
with SQLAlchemy in one REPEATABLE READ snapshot (JSON lines per table, binary as base64),
so no pg_dump of a matching server version is needed. Either restores into either engine,
which is also the way from SQLite to PostgreSQL.

Each folder has a manifest.json with the SHA-256 of every file; `restore` checks them.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import MetaData, create_engine, inspect, select, text
from sqlalchemy import types as sqltypes

from crypto.sealing import seal, unb64, unseal

from . import backup_seal, db
from .config import load

log = logging.getLogger("kesu.backup")

FORMAT = 1
STAMP = "%Y%m%dT%H%M%S.%fZ"
MAIN_PREFIX = "kesu-"
KEYSTORE_PREFIX = "keystore-"
SQLITE_FILE = "database.sqlite3"
DUMP_DIR = "database"
FILES_DIR = "files"
SKIP_TOP = {"keystore", "logs"}                 # never in the main backup
BATCH = 500


class BackupError(RuntimeError):
    pass


@dataclass
class BackupResult:
    main: Path
    keystore: Path
    pruned: list[Path]
    stamp: str


# --- helpers ---------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def stamp_of(when: datetime) -> str:
    return when.strftime(STAMP)


def parse_stamp(name: str) -> datetime | None:
    for prefix in (MAIN_PREFIX, KEYSTORE_PREFIX):
        if name.startswith(prefix):
            try:
                return datetime.strptime(name[len(prefix):], STAMP)
            except ValueError:
                return None
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path, meta: dict) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"):
        files[path.relative_to(folder).as_posix()] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    meta = dict(meta, format=FORMAT, files=files)
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), "utf-8")
    os.replace(tmp, folder / "manifest.json")


def read_manifest(folder: Path, verify: bool = True) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise BackupError(f"{folder} is not a kesu backup (no manifest.json)")
    meta = json.loads(path.read_text("utf-8"))
    if meta.get("format") != FORMAT:
        raise BackupError(f"{folder}: unknown backup format {meta.get('format')}")
    if verify:
        for rel, info in meta["files"].items():
            f = Path(folder) / rel
            if not f.is_file() or _sha256(f) != info["sha256"]:
                raise BackupError(f"{folder}: {rel} is missing or altered; this backup is damaged")
    return meta


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _shred_file(path: Path) -> None:
    """Overwrite, then unlink (as the key store does for a withdrawn case)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(os.urandom(size))
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        path.unlink(missing_ok=True)


def shred_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() or path.is_symlink():
            _shred_file(path) if path.is_file() else path.unlink()
        elif path.is_dir():
            path.rmdir()
    folder.rmdir()


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):].split("?", 1)[0])
    return None


# --- the database, logically ------------------------------------------------------------------

def _kind(coltype) -> str:
    if isinstance(coltype, sqltypes.JSON):
        return "json"
    if isinstance(coltype, sqltypes._Binary):  # noqa: SLF001 (SQLAlchemy names no public base of its binary types)
        return "binary"
    if isinstance(coltype, sqltypes.DateTime):
        return "datetime"
    if isinstance(coltype, sqltypes.Date):
        return "date"
    return "plain"


def _encode(kind: str, value):
    if value is None:
        return None
    if kind == "binary":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind in ("datetime", "date"):
        return value.isoformat()
    return value


def _decode(kind: str, value):
    if value is None:
        return None
    if kind == "binary":
        return base64.b64decode(value)
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    return value


def _revisions(conn) -> list[str]:
    if "alembic_version" not in inspect(conn).get_table_names():
        return []
    return sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _tables(conn) -> list:
    meta = MetaData()
    meta.reflect(bind=conn)
    return [t for t in meta.sorted_tables if t.name != "alembic_version"]


def dump_logical(url: str, out: Path) -> dict:
    """Every kesu table as JSON lines (a header line, then one list of values per row)."""
    _private_dir(out)
    engine = create_engine(url, future=True)
    counts: dict[str, int] = {}
    try:
        opts = {} if engine.dialect.name == "sqlite" else {"isolation_level": "REPEATABLE READ"}
        with engine.connect().execution_options(**opts) as conn, conn.begin():
            revisions = _revisions(conn)
            hers, seal_keys = backup_seal.plan(conn) if revisions else ({}, {})
            sealed = 0
            order = []
            for table in _tables(conn):
                cols = list(table.columns)
                kinds = [_kind(c.type) for c in cols]
                n = 0
                with open(out / f"{table.name}.jsonl", "w", encoding="utf-8") as fh:
                    fh.write(json.dumps({"table": table.name, "columns": [c.name for c in cols],
                                         "kinds": kinds}) + "\n")
                    pk = list(table.primary_key.columns) or cols
                    result = conn.execution_options(stream_results=True).execute(select(*cols).order_by(*pk))
                    rows = hers.get(table.name, {})
                    sealable = set(backup_seal.COLUMNS.get(table.name, ()))
                    at = [c.name for c in cols].index("id") if rows else 0
                    for row in result:
                        if rows and row[at] in rows:    # her values, sealed to her case (store.backup_seal)
                            row = [backup_seal.seal_value(v, table.name, row[at], c.name, rows[row[at]], seal_keys)
                                   if c.name in sealable else v for c, v in zip(cols, row)]
                            sealed += 1
                        fh.write(json.dumps([_encode(k, v) for k, v in zip(kinds, row)], ensure_ascii=False) + "\n")
                        n += 1
                counts[table.name] = n
                order.append(table.name)
    finally:
        engine.dispose()
    (out / "order.json").write_text(json.dumps(order), "utf-8")
    return {"revisions": revisions, "rows": counts, "sealed_rows": sealed}


def _upgrade_to(url: str, revisions: list[str]) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory
    cfg = db.alembic_config(url)
    known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
    unknown = [r for r in revisions if r not in known]
    if unknown:
        raise BackupError(f"the backup's schema revision(s) {unknown} are newer than this kesu: upgrade kesu first")
    for rev in revisions:
        command.upgrade(cfg, rev)


def _ensure_empty(conn) -> None:
    for table in _tables(conn):
        if conn.execute(select(table).limit(1)).first() is not None:
            raise BackupError(f"the target database is not empty (table {table.name} has rows): "
                              "restore into a fresh database")


def _reset_sequences(conn) -> None:
    if conn.dialect.name != "postgresql":
        return
    for table in _tables(conn):
        for col in table.primary_key.columns:
            if not isinstance(col.type, sqltypes.Integer):
                continue
            seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                               {"t": table.name, "c": col.name}).scalar()
            if seq:
                conn.execute(text(f'SELECT setval(:s, COALESCE((SELECT MAX("{col.name}") FROM "{table.name}"), 0) + 1, false)'),
                             {"s": seq})


def _load_rows(url: str, revisions: list[str], source) -> dict:
    """Create the schema at the backup's revision, load the rows, then upgrade to the newest."""
    if url.startswith("sqlite:///"):
        _sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
    _upgrade_to(url, revisions)
    engine = db.engine_for(url)
    counts = {}
    with engine.begin() as conn:
        _ensure_empty(conn)
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        tables = {t.name: t for t in _tables(conn)}
        for name, columns, rows in source():
            if name not in tables:
                raise BackupError(f"table {name} of the backup is not in the schema it names")
            table = tables[name]
            missing = [c for c in columns if c not in table.c]
            if missing:
                raise BackupError(f"columns {missing} of {name} are not in the schema")
            kinds = [_kind(table.c[c].type) for c in columns]
            batch, n = [], 0
            for row in rows:
                batch.append({c: _decode(k, v) for c, k, v in zip(columns, kinds, row)})
                if len(batch) >= BATCH:
                    conn.execute(table.insert(), batch)
                    n += len(batch)
                    batch = []
            if batch:
                conn.execute(table.insert(), batch)
                n += len(batch)
            counts[name] = n
        _reset_sequences(conn)
    db.upgrade(url)
    return counts


def load_logical(url: str, folder: Path, revisions: list[str]) -> dict:
    order = json.loads((folder / "order.json").read_text("utf-8"))

    def source():
        for name in order:
            with open(folder / f"{name}.jsonl", encoding="utf-8") as fh:
                header = json.loads(fh.readline())
                yield header["table"], header["columns"], (json.loads(line) for line in fh if line.strip())
    return _load_rows(url, revisions, source)


def load_from_sqlite(url: str, sqlite_file: Path) -> dict:
    """Rows of a SQLite backup into another engine (the way from SQLite to PostgreSQL)."""
    src = create_engine(f"sqlite:///{sqlite_file}", future=True)
    try:
        with src.connect() as sconn:
            revisions = _revisions(sconn)
            tables = _tables(sconn)

            def source():
                for table in tables:
                    cols = list(table.columns)
                    kinds = [_kind(c.type) for c in cols]
                    rows = sconn.execute(select(*cols)).all()
                    yield table.name, [c.name for c in cols], \
                        ([_encode(k, v) for k, v in zip(kinds, r)] for r in rows)
            return _load_rows(url, revisions, source)
    finally:
        src.dispose()


def _seal_sqlite_copy(path: Path) -> int:
    """Seal her values in the copy (store.backup_seal), then rewrite the file (VACUUM) so no
    freed page keeps the clear values."""
    engine = create_engine(f"sqlite:///{path}", future=True)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
            sealed = backup_seal.seal_rows(conn)
    finally:
        engine.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("VACUUM")
        con.execute("PRAGMA journal_mode=DELETE")       # one file, no -wal/-shm beside it
    finally:
        con.close()
    return sealed


def _sqlite_online_copy(src: Path, dst: Path) -> None:
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        with target:
            source.backup(target)
    finally:
        target.close()
        source.close()


# --- backup ----------------------------------------------------------------------------------

def _copy_instance_files(instance_dir: Path, dest: Path, exclude: set[Path]) -> int:
    """Everything of the instance folder but the key store, logs, sockets and the SQLite files."""
    n = 0
    if not instance_dir.exists():
        return n
    for entry in sorted(instance_dir.iterdir()):
        if entry.name in SKIP_TOP or entry.resolve() in exclude or entry.name.endswith(".sock"):
            continue
        if entry.name.startswith("kesu.db") or entry.name.endswith((".tmp", "-wal", "-shm", "-journal")):
            continue
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            for path in sorted(entry.rglob("*")):
                if any(p.resolve() in exclude for p in [path, *path.parents]):
                    continue
                if path.is_file() and not path.is_symlink() and not path.name.startswith(".tmp-"):
                    out = target / path.relative_to(entry)
                    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    shutil.copy2(path, out)
                    n += 1
        elif entry.is_file():
            dest.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copy2(entry, target)
            n += 1
    return n


def create(instance, root, now: datetime | None = None, prune: bool = True) -> BackupResult:
    """A backup of `instance` into `root`: kesu-<stamp>/ and keystore-<stamp>/, then pruning."""
    settings = instance.settings
    root = Path(root).absolute()
    now = now or _now()
    stamp = stamp_of(now)
    main = root / f"{MAIN_PREFIX}{stamp}"
    keys = root / f"{KEYSTORE_PREFIX}{stamp}"
    if main.exists() or keys.exists():
        raise BackupError(f"{main} already exists")
    _private_dir(root)
    work = root / f".partial-{stamp}"
    _private_dir(work)
    try:
        # 0. the audit log's head, signed when the key is at hand: taken before the copy, so the
        # copy holds it; a restore (or a later check) finds whether the chain still reaches it
        from store import audit
        with instance.session() as session:
            anchor = (audit.signed_head(session, instance.private_keys()) if instance.unlocked
                      else audit.head(session))
        # 1. the database (a case with a submission waiting gets its key first, so the
        #    submission is sealed to her in the backup: store.backup_seal)
        backup_seal.ensure_pending_keys(instance)
        url = settings.database_url
        src = _sqlite_path(url)
        if src is not None:
            _sqlite_online_copy(src, work / SQLITE_FILE)
            conn = sqlite3.connect(work / SQLITE_FILE)
            try:
                revisions = sorted(r for (r,) in conn.execute("SELECT version_num FROM alembic_version"))
            except sqlite3.OperationalError:
                revisions = []
            finally:
                conn.close()
            sealed = _seal_sqlite_copy(work / SQLITE_FILE) if revisions else 0
            database = {"engine": "sqlite", "file": SQLITE_FILE, "revisions": revisions, "sealed_rows": sealed}
        else:
            dumped = dump_logical(url, work / DUMP_DIR)
            database = {"engine": engine_name(url), "dump": DUMP_DIR, **dumped}
        # 2. blobs, secrets, config and the rest of the instance folder (never the key store)
        exclude = {root.resolve()}
        if src is not None:
            exclude |= {Path(f"{src}{suffix}").resolve() for suffix in ("", "-wal", "-shm", "-journal")}
        exclude.add(settings.secrets_dir.resolve())
        n_files = _copy_instance_files(settings.instance, work / FILES_DIR, exclude=exclude)
        sealed_secrets = _seal_secrets(instance, work / FILES_DIR)
        _write_manifest(work, {"kind": "main", "stamp": stamp, "database": database,
                               "instance": str(settings.instance), "files_copied": n_files,
                               "audit_head": anchor, "sealed_secrets": sealed_secrets})
        # 3. the key store, apart
        kwork = root / f".partial-{KEYSTORE_PREFIX}{stamp}"
        _private_dir(kwork)
        count = 0
        if settings.keystore_dir.exists():
            for path in sorted(settings.keystore_dir.iterdir()):
                if path.is_file() and path.suffix == ".key":
                    shutil.copy2(path, kwork / path.name)
                    os.chmod(kwork / path.name, 0o600)
                    count += 1
        expires = now + timedelta(days=settings.keystore_backup_days)
        _write_manifest(kwork, {"kind": "keystore", "stamp": stamp, "keys": count,
                                "expires": expires.isoformat(timespec="seconds") + "Z",
                                "retention_days": settings.keystore_backup_days})
        os.replace(work, main)
        os.replace(kwork, keys)
    except BaseException:
        for partial in (work, root / f".partial-{KEYSTORE_PREFIX}{stamp}"):
            if partial.exists():
                shred_tree(partial)
        raise
    pruned = prune_keystores(root, settings.keystore_backup_days, now=now, keep=keys) if prune else []
    return BackupResult(main=main, keystore=keys, pruned=pruned, stamp=stamp)


SEALED_SUFFIX = ".sealed"


def _seal_secrets(instance, files: Path) -> list[str]:
    """The server secrets (case-number and password pepper, TOTP key, session and names keys)
    go into the main backup sealed to the org public key: a stolen main backup without the org
    key passphrase cannot check a guessed case number (HMAC with the pepper) or a staff
    password, nor read a TOTP secret. The passphrase opens them on restore."""
    settings = instance.settings
    if not settings.secrets_dir.is_dir() or not settings.secrets_dir.resolve().is_relative_to(settings.instance.resolve()):
        return []
    public = unb64(instance.public_key()[1])
    out = files / settings.secrets_dir.relative_to(settings.instance)
    names = []
    for path in sorted(settings.secrets_dir.iterdir()):
        if path.is_file() and not path.is_symlink():
            out.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = out / (path.name + SEALED_SUFFIX)
            target.write_bytes(seal(public, path.read_bytes()))
            os.chmod(target, 0o600)
            names.append(path.name)
    return names


def _open_secrets(instance, names: list[str]) -> None:
    private = instance.private_keys().private_key
    folder = instance.settings.secrets_dir
    for name in names:
        sealed = folder / (name + SEALED_SUFFIX)
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(unseal(private, sealed.read_bytes()))
        sealed.unlink()


def engine_name(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0]


def prune_keystores(root, days: int, now: datetime | None = None, keep: Path | None = None) -> list[Path]:
    """Destroy key-store backups in `root` taken more than `days` ago (by the stamp in their name)."""
    now = now or _now()
    root = Path(root)
    limit = now - timedelta(days=days)
    gone = []
    for folder in sorted(root.glob(KEYSTORE_PREFIX + "*")):
        taken = parse_stamp(folder.name)
        if taken is None or not folder.is_dir() or (keep and folder.resolve() == Path(keep).resolve()):
            continue
        if taken < limit:
            shred_tree(folder)
            gone.append(folder)
            log.info("key-store backup %s destroyed (older than %d days)", folder.name, days)
    return gone


def list_backups(root) -> dict:
    root = Path(root)
    return {"main": sorted(root.glob(MAIN_PREFIX + "*")), "keystore": sorted(root.glob(KEYSTORE_PREFIX + "*"))}


# --- restore ---------------------------------------------------------------------------------

def needs_passphrase(meta: dict) -> bool:
    """Whether restoring this main backup needs the org key passphrase (sealed secrets or rows)."""
    return bool(meta.get("sealed_secrets") or meta["database"].get("sealed_rows"))


def resolve(path) -> tuple[Path, Path | None]:
    """(main backup folder, key-store backup taken with it or None) for a backup or a backup root."""
    path = Path(path).absolute()
    if (path / "manifest.json").exists():
        main = path
    else:
        found = sorted(path.glob(MAIN_PREFIX + "*"))
        if not found:
            raise BackupError(f"no kesu backup in {path}")
        main = found[-1]
    twin = main.parent / (KEYSTORE_PREFIX + main.name[len(MAIN_PREFIX):])
    return main, (twin if twin.exists() else None)


def _target_is_fresh(settings) -> None:
    if settings.keystore_dir.exists() and any(settings.keystore_dir.iterdir()):
        raise BackupError(f"{settings.keystore_dir} is not empty: restore into a fresh instance folder")
    if settings.secrets_dir.exists() and any(settings.secrets_dir.iterdir()):
        raise BackupError(f"{settings.secrets_dir} is not empty: restore into a fresh instance folder")
    src = _sqlite_path(settings.database_url)
    if src is not None and src.exists() and src.stat().st_size > 0:
        raise BackupError(f"{src} exists: restore into a fresh instance folder")


def check_audit(url: str, anchor: dict | None) -> dict:
    """The restored audit chain against the head recorded (and signed) when the backup was
    taken: {"head", "signed", "problems"}; the signature is checked against the restored
    instance's own keys."""
    from sqlalchemy.orm import Session

    from crypto.sealing import unb64
    from store import audit
    from store.models import OrgKey
    if not anchor:
        return {"head": None, "signed": False, "problems": ["the backup records no audit head (an older backup)"]}
    with Session(db.engine_for(url)) as session:
        keys = [unb64(b["verify_key"]) for b in session.execute(select(OrgKey.bundle)).scalars()]
        problems = audit.check_anchor(session, anchor, keys, signed="signature" in anchor)
    return {"head": anchor.get("id"), "signed": "signature" in anchor, "problems": problems}


def restore(backup, instance_dir=None, keystore=None, with_keystore: bool = True, passphrase: str | None = None,
            **overrides) -> dict:
    """Restore a main backup (and a key-store backup) into a fresh instance folder.

    `keystore`: a key-store backup folder; by default the one taken with the main backup.
    `passphrase`: the org key passphrase, needed when the backup holds values sealed to cases
    (store.backup_seal): they are opened with the restored case keys, and emptied where the
    key is gone (a withdrawn case whose key-store backups have expired). Returns a summary.
    """
    main, twin = resolve(backup)
    meta = read_manifest(main)
    if meta.get("kind") != "main":
        raise BackupError(f"{main} is not a main backup")
    if needs_passphrase(meta) and not passphrase:
        raise BackupError(f"{main} holds secrets sealed to the org key: give the org key passphrase to restore it")
    keystore = Path(keystore).absolute() if keystore else twin
    kmeta = read_manifest(keystore) if (keystore and with_keystore) else None
    if kmeta is not None and kmeta.get("kind") != "keystore":
        raise BackupError(f"{keystore} is not a key-store backup")

    settings = load(instance_dir, **overrides)
    _target_is_fresh(settings)
    _private_dir(settings.instance)
    # files first: config.toml may name the database
    files = main / FILES_DIR
    if files.exists():
        for path in sorted(files.rglob("*")):
            out = settings.instance / path.relative_to(files)
            if path.is_dir():
                _private_dir(out)
            else:
                out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.copy2(path, out)
    if settings.secrets_dir.exists():
        os.chmod(settings.secrets_dir, 0o700)
        for path in settings.secrets_dir.iterdir():
            os.chmod(path, 0o600)
    settings = load(instance_dir, **overrides)      # now with the restored config.toml (env still wins)

    database = meta["database"]
    target = settings.database_url
    if database["engine"] == "sqlite":
        dst = _sqlite_path(target)
        if dst is not None:
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if dst.exists() and dst.stat().st_size > 0:
                raise BackupError(f"{dst} exists: restore into a fresh instance folder")
            _sqlite_online_copy(main / database["file"], dst)
            db.upgrade(target)
            rows = None
        else:
            rows = load_from_sqlite(target, main / database["file"])
    else:
        rows = load_logical(target, main / database["dump"], database["revisions"])

    # Staff sessions do not travel: everyone logs in again on the restored instance.
    with db.engine_for(target).begin() as conn:
        if "staff_sessions" in inspect(conn).get_table_names():
            conn.execute(text("DELETE FROM staff_sessions"))

    restored_keys = 0
    if kmeta is not None:
        _private_dir(settings.keystore_dir)
        for path in sorted(keystore.glob("*.key")):
            shutil.copy2(path, settings.keystore_dir / path.name)
            os.chmod(settings.keystore_dir / path.name, 0o600)
            restored_keys += 1
    settings.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    opened = None
    if needs_passphrase(meta):
        from .instance import Instance
        restored = Instance(settings)
        restored.unlock(passphrase)          # before anything reads a secret: they are sealed still
        _open_secrets(restored, meta.get("sealed_secrets") or [])
        if meta["database"].get("sealed_rows"):
            opened = backup_seal.open_rows(restored)
    audit_report = check_audit(target, meta.get("audit_head"))
    return {"audit": audit_report, "sealed_values": opened,
            "instance": str(settings.instance), "database": engine_name(target), "from": str(main),
            "taken": meta["stamp"], "keystore": str(keystore) if kmeta else None,
            "keystore_taken": kmeta["stamp"] if kmeta else None, "case_keys": restored_keys, "rows": rows}
