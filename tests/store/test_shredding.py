"""Withdrawal shreds her evidence everywhere, old backups included (issue 14 item 1).

A real case (taken in through the sealed-box path), a real crawl of a loopback page whose
image is hers (real Chromium, the real matcher), staff confirm, a notice is prepared, then
`kesu backup`. She withdraws; the key-store backups expire; the OLD main backup is restored
into a fresh folder and unlocked with the org key passphrase. Nothing of hers opens: no image
byte, no signal, no URL, from any row or file, with every key the passphrase gives.
"""
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import TEST_PASSPHRASE, make_instance
from sites import build_site, serve_site
from sqlalchemy import select
from takedown_helpers import make_domain
from test_backup import env_for, fresh_url, kesu, take_in_case  # noqa: F401 (fresh_url: a fixture)

from crypto import CryptoError
from crypto.sealing import unseal
from store import backup, cases
from store.config import load
from store.instance import Instance
from store.models import Capture, Media, Notice, Takedown
from workers.capture.crawl import capture_artifacts, crawl, create_job
from workers.matching import matcher
from workers.takedown import notify

HERS = "img/lazy2.jpg"          # a JPEG on gallery.html, big enough to be recognisable


@pytest.fixture
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    hashes = build_site(folder)
    base, stop = serve_site(folder)
    yield base, hashes, folder
    stop()


def _everything_openable(inst) -> list[bytes]:
    """Every plaintext the org key, and any case key still in the key store, opens."""
    try:
        from store import casekeys
    except ImportError:             # the code before issue 14: only the org key
        casekeys = None
    out: list[bytes] = []
    private = inst.private_keys().private_key
    keys = []
    with inst.session() as s:
        for c in s.execute(select(Capture)).scalars():
            if c.data_key:
                keys.append(unseal(private, c.data_key))
            elif casekeys is not None and casekeys.capture_key(inst, s, c) is not None:
                keys.append(casekeys.capture_key(inst, s, c))
        for m in s.execute(select(Media)).scalars():
            if m.signals:
                out.append(unseal(private, m.signals))
            elif casekeys is not None and casekeys.media_signals(inst, s, m):
                out.append(repr(casekeys.media_signals(inst, s, m)).encode())
        for n in s.execute(select(Notice).where(Notice.archived.is_not(None))).scalars():
            try:
                out.append(notify.open_archive(inst, n))
            except (LookupError, CryptoError):
                pass
    if getattr(inst.settings, "blobs_in_database", False):     # PostgreSQL: blobs in the database
        from store.models import BlobRow
        with inst.session() as s:
            names = list(s.execute(select(BlobRow.name)).scalars())
    else:
        names = [p.name for p in inst.settings.blob_dir.rglob("*") if p.is_file()]
    assert names, "no blob at all: the check below would prove nothing"
    for name in names:
        for key in keys:
            try:
                out.append(inst.blobs.get(key, name))
            except (CryptoError, ValueError, OSError):
                pass
    return out


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.browser
def test_old_backup_opens_nothing_of_hers_after_withdrawal(tmp_path, site, database_url, fresh_url):  # noqa: F811
    base, hashes, folder = site
    image = (folder / HERS).read_bytes()
    page_url, image_url = f"{base}/gallery.html", f"{base}/{HERS}"
    inst = make_instance(tmp_path / "live", database_url,
                         crawl_delay=0, crawl_page_seconds=20, crawl_idle_seconds=0.8, crawl_faces=0,
                         org_email="help@example.org", org_address="1-2-3 Example-cho, Tokyo",
                         org_responsible="Hanako Example")
    payload = {"version": 1, "category": "adult_ncii", "language": "en", "known_urls": [], "contact": None,
               "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-01-02"},
               "signals": [{"type": "sha256", "hash": hashes[HERS], "item": "p1"}],
               "items": [{"item": "p1", "kind": "photo", "label": "holiday q3"}]}
    case_id = take_in_case(inst, payload)
    matcher.reset()
    try:
        job = create_job(inst, page_url, depth=0, requested_by="test")
        assert crawl(inst, job)["matches"] >= 1
    finally:
        matcher.reset()
    make_domain(inst, domain="127.0.0.1")
    from backoffice.review import decide
    with inst.session() as s:
        media_id = s.execute(select(Media.id).where(Media.url == image_url)).scalar_one()
        capture_id = s.execute(select(Media.capture_id).where(Media.id == media_id)).scalar_one()
    takedowns = decide(inst, "staff:1", None, [(case_id, media_id)], "confirm")["takedowns"]
    notice_id = notify.prepare(inst, takedowns[0], "site", "en", actor="staff:1")

    # Live, before withdrawal: all of it opens, and only through her case key.
    assert capture_artifacts(inst, capture_id)
    opened = _everything_openable(inst)
    assert image in opened and any(hashes[HERS].encode() in o for o in opened)
    with inst.session() as s:
        assert page_url.encode() in notify.open_archive(inst, s.get(Notice, notice_id))

    root = tmp_path / "backups"
    env = env_for(inst.settings)
    result = kesu("backup", str(root), env=env)     # the real `kesu backup`
    assert result.exit_code == 0, result.output
    old_main = backup.list_backups(root)["main"][0]

    # Restored while its key-store backup lives, the same backup gives all of it back.
    early = tmp_path / "early"
    early_url = fresh_url("early")
    summary = backup.restore(old_main, instance_dir=early, passphrase=TEST_PASSPHRASE, database_url=early_url)
    assert (summary.get("sealed_values") or {}).get("emptied", 0) == 0
    twin = Instance(load(early, database_url=early_url))
    twin.unlock(TEST_PASSPHRASE)
    assert capture_artifacts(twin, capture_id) and image in _everything_openable(twin)
    with twin.session() as s:
        assert s.get(Takedown, takedowns[0]).url == page_url
        assert s.get(Media, media_id).url == image_url

    cases.withdraw(inst, case_id)
    # the key-store backups older than the withdrawal expire (a later backup prunes them)
    later = datetime.utcnow() + timedelta(days=inst.settings.keystore_backup_days + 1)
    backup.create(inst, root, now=later)
    assert not any(k.name.endswith(old_main.name[len(backup.MAIN_PREFIX):])
                   for k in backup.list_backups(root)["keystore"])

    # The OLD main backup, restored elsewhere, unlocked with the passphrase.
    late_url = fresh_url("restored")
    restored = backup.restore(old_main, instance_dir=tmp_path / "restored", passphrase=TEST_PASSPHRASE,
                              database_url=late_url)
    assert restored["keystore"] is None
    other = Instance(load(tmp_path / "restored", database_url=late_url))
    other.unlock(TEST_PASSPHRASE)
    with other.session() as s:
        assert s.get(Takedown, takedowns[0]) is not None            # the rows are there: the backup is old
        urls = {*s.execute(select(Takedown.url)).scalars(), *s.execute(select(Media.url)).scalars(),
                *s.execute(select(Capture.url)).scalars(), *s.execute(select(Capture.final_url)).scalars()}
        assert not any(u.startswith(base) for u in urls), "a URL of hers is in the restored database"
    opened = _everything_openable(other)
    assert not any(image in o for o in opened), "an image byte of hers opened"
    assert not any(hashes[HERS].encode() in o for o in opened), "a signal of hers opened"
    assert not any(u.encode() in o for o in opened for u in (page_url, image_url)), "a URL of hers opened"
    on_disk = _all_bytes(tmp_path / "restored") + _all_bytes(old_main)
    assert image not in on_disk and hashes[HERS].encode() not in on_disk
    for url in (page_url, image_url, f"{base}/"):
        assert url.encode() not in on_disk, f"{url} is readable in the old backup"
    with pytest.raises(LookupError):
        capture_artifacts(other, capture_id)


def test_rows_sealed_to_the_org_key_before_seal_keys_move_under_the_case_key(tmp_path):
    """`kesu key rewrap`: captures, media signals and notices made before 0008 (org-sealed)
    go under her case key, so her withdrawal shreds them too; idempotent. (SQLite only: no
    engine-specific statement here.)"""
    instance = make_instance(tmp_path / "i", f"sqlite:///{tmp_path / 'i' / 'kesu.db'}")
    import json

    from takedown_helpers import make_takedown

    from crypto import envelope
    from crypto.sealing import seal, unb64
    from store import casekeys
    from store.models import CaptureKey, Case, Match
    public = unb64(instance.public_key()[1])
    case_id = take_in_case(instance)
    key = envelope.new_key()
    blob = instance.blobs.put(key, b"her picture bytes")
    with instance.session() as s:
        s.get(Case, case_id).seal_key = None                       # as before seal keys
        cap = Capture(url="https://example.net/p", status="ok", data_key=seal(public, key),
                      evidence={"artifacts": {"page.html": {"blob": blob, "sha256": "", "bytes": 17}}})
        s.add(cap)
        s.flush()
        media = Media(capture_id=cap.id, url="https://example.net/a.jpg", sha256_key="00" * 32, blob=blob,
                      signals=seal(public, json.dumps({"sha256": "ab" * 32}).encode()))
        s.add(media)
        s.flush()
        s.add(Match(case_id=case_id, media_id=media.id, kind="sha256", distance=0))
        capture_id, media_id = cap.id, media.id
    td = make_takedown(instance, case_id, make_domain(instance), "https://example.net/p")
    with instance.session() as s:
        notice = Notice(takedown_id=td, route="site")
        s.add(notice)
        s.flush()
        notice.archived = notify.archive(public, notice.id, b"the notice as sent")
        notice_id = notice.id
    counts = casekeys.rewrap(instance)
    assert counts == {"seal_keys": 1, "captures": 1, "media": 1, "notices": 1, "left": 0}
    assert casekeys.rewrap(instance) == {"seal_keys": 0, "captures": 0, "media": 0, "notices": 0, "left": 0}
    with instance.session() as s:
        cap, media = s.get(Capture, capture_id), s.get(Media, media_id)
        assert cap.data_key is None and media.signals is None
        assert s.execute(select(CaptureKey.case_id)).scalars().all() == [case_id]
        assert instance.blobs.get(casekeys.capture_key(instance, s, cap), blob) == b"her picture bytes"
        assert casekeys.media_signals(instance, s, media) == {"sha256": "ab" * 32}
        assert notify.open_archive(instance, s.get(Notice, notice_id)) == b"the notice as sent"
    instance.keystore.destroy(case_id)                             # her key gone: nothing opens
    with instance.session() as s:
        assert casekeys.capture_key(instance, s, s.get(Capture, capture_id)) is None
        assert casekeys.media_signals(instance, s, s.get(Media, media_id)) is None
        with pytest.raises(LookupError):
            notify.open_archive(instance, s.get(Notice, notice_id))


def test_a_submission_waiting_in_an_old_backup_is_shredded_by_her_withdrawal(tmp_path):
    """A submission not yet taken in is sealed (by her browser) to the org key only; in a main
    backup it is sealed once more to her case, so once she withdraws and the key-store backups
    expire, the passphrase no longer opens it. While they live, it is taken in as usual."""
    import json

    from crypto.sealing import seal, unb64
    from store.models import Submission
    from workers.cases.decrypt import case_signals
    from workers.cases.takein import take_in_submission
    inst = make_instance(tmp_path / "i", f"sqlite:///{tmp_path / 'i' / 'kesu.db'}")
    key_id, public = inst.public_key()
    payload = {"version": 1, "category": "adult_ncii", "language": "en", "known_urls": [], "contact": None,
               "consent": {"takedown": True, "hotline": False, "share_hashes": False, "at": "2026-01-02"},
               "signals": [{"type": "sha256", "hash": "5e" * 32, "item": "p1"}],
               "items": [{"item": "p1", "kind": "photo", "label": "x"}]}
    _, _, case_id, sub_id = cases.create_case(inst, key_id, seal(unb64(public), json.dumps(payload).encode()))
    root = tmp_path / "b"
    made = backup.create(inst, root)

    early = tmp_path / "early"
    url = f"sqlite:///{early / 'kesu.db'}"
    backup.restore(made.main, instance_dir=early, passphrase=TEST_PASSPHRASE, database_url=url)
    twin = Instance(load(early, database_url=url))
    twin.unlock(TEST_PASSPHRASE)
    assert take_in_submission(twin, sub_id)["status"] == "taken_in"
    assert [s["hash"] for s in case_signals(twin, case_id)] == ["5e" * 32]

    cases.withdraw(inst, case_id)
    backup.create(inst, root, now=datetime.utcnow() + timedelta(days=inst.settings.keystore_backup_days + 1))
    late = tmp_path / "late"
    url = f"sqlite:///{late / 'kesu.db'}"
    backup.restore(made.main, instance_dir=late, passphrase=TEST_PASSPHRASE, database_url=url)
    other = Instance(load(late, database_url=url))
    other.unlock(TEST_PASSPHRASE)
    with other.session() as s:
        sealed = s.get(Submission, sub_id).sealed
    with pytest.raises(CryptoError):
        unseal(other.private_keys().private_key, sealed)
    assert b"5e5e5e" not in _all_bytes(made.main) + _all_bytes(late)
    assert take_in_submission(other, sub_id)["status"] == "rejected"
