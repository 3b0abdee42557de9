"""Key roles and write-only keys: a writer adds snapshots it can never read back.

Real repositories on disk; the writer's limits are checked twice: chaoskit refuses the
operation (one message naming key, role and operation, nothing written), and the
writer's keys cannot open what it could try to read by going around chaoskit.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.repository import keys as keyfiles
from chaoskit.dr.protect.repository.audit import read_log, verify_log
from chaoskit.dr.protect.repository.crypto import unwrap
from chaoskit.dr.protect.repository.index import list_index_files
from chaoskit.dr.protect.repository.keyring import MAGIC, unframe
from chaoskit.dr.protect.repository.packs import list_packs
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.retention import RetentionPolicy
from chaoskit.dr.protect.repository.snapshots import HEADER_MAGIC, load_snapshot
from chaoskit.errors import ConfigError, IntegrityError, PermissionDeniedError

ADMIN, WRITER, READER, OPERATOR = "admin pw", "writer pw", "reader pw", "operator pw"
N = 2**10


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def listing(root: Path) -> dict[str, bytes]:
    """Every file of a repository (locks and temporary files included), with content; not
    the audit log, which records the refusals (:func:`assert_refusal_audited`)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.parent.name != "audit"}  # fmt: skip


def assert_refusal_audited(repo: Repository, operation: str) -> None:
    last = read_log(repo.root)[-1]
    assert (last["op"], last["outcome"], last["key"]) == (operation, "refused", repo.key_id)
    assert verify_log(repo.root).ok


@pytest.fixture
def admin(tmp_path: Path) -> Repository:
    repo = init_repository(tmp_path / "repo", ADMIN, scrypt_n=N)
    repo.add_key(WRITER, role="writer", scrypt_n=N)
    repo.add_key(READER, role="reader", scrypt_n=N)
    repo.add_key(OPERATOR, role="operator", scrypt_n=N)
    return repo


@pytest.fixture
def writer(admin: Repository) -> Repository:
    return open_repository(admin.root, WRITER)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return tree(
        tmp_path / "src",
        {"weights.bin": os.urandom(3 << 20), "sub/state": b"step 7\n", "empty": b""},
    )


def test_writer_backup_restores_with_a_reading_key(
    admin: Repository, writer: Repository, src: Path, tmp_path: Path
) -> None:
    assert (writer.role, writer.master) == ("writer", None)
    assert writer.allows("backup") and not writer.allows("snapshots")
    snap = writer.backup(src, checkpoint_step=7)
    for password in (ADMIN, READER, OPERATOR):
        reading = open_repository(admin.root, password)
        assert [s.id for s in reading.snapshots()] == [snap.id]
        out = tmp_path / f"out-{password[:5]}"
        reading.restore("latest", out)
        assert read_tree(out) == read_tree(src)
        assert reading.verify(src).ok
    assert admin.check(read_data=True).ok
    # the writer's snapshot and packs carry the wrapped data key, not the master key's seal
    header, body = snapshot_parts(admin.snap_dir / snap.id)
    assert body.startswith(MAGIC)


def snapshot_parts(path: Path) -> tuple[bytes, bytes]:
    """(sealed header, sealed manifest) of a snapshot file."""
    blob = path.read_bytes()
    assert blob.startswith(HEADER_MAGIC)
    (length,) = struct.unpack_from("<I", blob, len(HEADER_MAGIC))
    start = len(HEADER_MAGIC) + 4
    return blob[start : start + length], blob[start + length :]


def test_every_key_lists_recovery_points_and_only_readers_see_their_files(
    admin: Repository, writer: Repository, src: Path
) -> None:
    """A writer learns when and from where each recovery point was made (the agent must
    not back up a checkpoint twice), never what it holds."""
    old = admin.backup(src, time=1.0, checkpoint_step=1, summary={"checkpoint": "ckpt-1"})
    new = writer.backup(src, time=2.0, checkpoint_step=2, summary={"checkpoint": "ckpt-2"})
    for password in (ADMIN, READER, OPERATOR, WRITER):
        points = open_repository(admin.root, password).recovery_points()
        assert points == [old.header(), new.header()]
        assert [(p.checkpoint_step, p.summary["checkpoint"]) for p in points] == [
            (1, "ckpt-1"), (2, "ckpt-2"),
        ]  # fmt: skip
        assert not hasattr(points[0], "files")
    assert_refusal_free(writer)


def assert_refusal_free(repo: Repository) -> None:
    assert all(e["outcome"] != "refused" for e in read_log(repo.root))


def test_a_header_that_lies_about_its_manifest_is_caught(
    admin: Repository, writer: Repository, src: Path
) -> None:
    """A header is sealed with a key writers hold: a reading key checks it against the
    manifest, so a forged header cannot pass for another checkpoint."""
    first = writer.backup(src, time=1.0, summary={"checkpoint": "ckpt-1"})
    second = writer.backup(src, time=2.0, summary={"checkpoint": "ckpt-2"})
    header_2, _ = snapshot_parts(admin.snap_dir / second.id)
    forged = dataclasses.replace(first.header(), summary={"checkpoint": "ckpt-9"})
    raw = zlib.compress(json.dumps(dataclasses.asdict(forged)).encode())
    sealed = writer.keyring.index.seal(raw, b"chaoskit-snapshot-header\0" + first.id.encode())
    _, body_1 = snapshot_parts(admin.snap_dir / first.id)
    path = admin.snap_dir / first.id
    path.write_bytes(HEADER_MAGIC + struct.pack("<I", len(sealed)) + sealed + body_1)
    assert [p.summary["checkpoint"] for p in writer.recovery_points()] == ["ckpt-9", "ckpt-2"]
    with pytest.raises(IntegrityError, match="its header does not match its manifest"):
        load_snapshot(admin.snap_dir, admin.keyring, first.id)
    report = admin.check()
    assert not report.ok and any(first.id[:8] in str(p) for p in report.problems)
    # a header moved from another snapshot names that one: refused for every key
    path.write_bytes(HEADER_MAGIC + struct.pack("<I", len(header_2)) + header_2 + body_1)
    with pytest.warns(UserWarning, match=f"snapshot {first.id[:8]} header"):
        assert [p.id for p in writer.recovery_points()] == [second.id]


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("snapshots", lambda r, tmp: r.snapshots()),
        ("snapshots", lambda r, tmp: r.snapshot("latest")),
        ("restore", lambda r, tmp: r.restore("latest", tmp / "out")),
        ("verify", lambda r, tmp: r.verify(tmp / "src")),
        ("check", lambda r, tmp: r.check(read_data=True)),
        ("forget", lambda r, tmp: r.forget(RetentionPolicy(keep_last=1))),
        ("forget", lambda r, tmp: r.forget(ids=["latest"], prune=True)),
        ("prune", lambda r, tmp: r.prune()),
        ("key add", lambda r, tmp: r.add_key("x", role="admin", scrypt_n=N)),
        ("key list", lambda r, tmp: r.list_keys()),
        ("key remove", lambda r, tmp: r.remove_key(r.key_id)),
    ],
)
def test_writer_is_refused_with_one_message_and_nothing_written(
    admin: Repository, writer: Repository, src: Path, tmp_path: Path, operation: str, call
) -> None:
    writer.backup(src)
    before = listing(admin.root)
    with pytest.raises(PermissionDeniedError) as caught:
        call(writer, tmp_path)
    assert str(caught.value) == (
        f"key {writer.key_id[:8]} has role writer, which may not {operation} "
        "(a writer key may add snapshots only)"
    )
    assert listing(admin.root) == before
    assert_refusal_audited(writer, operation)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("password", "allowed", "refused"),
    [
        (READER, {"snapshots", "restore", "verify", "check"}, {"backup", "forget", "prune"}),
        (OPERATOR, {"snapshots", "restore", "check", "backup", "forget", "prune"}, {"key add"}),
    ],
)
def test_reader_and_operator_roles(
    admin: Repository, src: Path, tmp_path: Path, password: str, allowed, refused
) -> None:
    admin.backup(src, time=1.0)
    admin.backup(src, time=2.0)
    repo = open_repository(admin.root, password)
    calls = {
        "snapshots": lambda: repo.snapshots(),
        "restore": lambda: repo.restore("latest", tmp_path / "out"),
        "verify": lambda: repo.verify(src),
        "check": lambda: repo.check(),
        "backup": lambda: repo.backup(src, time=3.0),
        "forget": lambda: repo.forget(RetentionPolicy(keep_last=1)),
        "prune": lambda: repo.prune(),
        "key add": lambda: repo.add_key("x", scrypt_n=N),
    }
    for operation in sorted(refused):
        before = listing(admin.root)
        with pytest.raises(
            PermissionDeniedError, match=f"role {repo.role}, which may not {operation} "
        ):
            calls[operation]()
        assert listing(admin.root) == before, operation
        assert_refusal_audited(repo, operation)
    for operation in sorted(allowed):
        calls[operation]()


def test_writer_holds_no_key_that_opens_data(
    admin: Repository, writer: Repository, src: Path, tmp_path: Path
) -> None:
    """Around chaoskit: the writer's key file holds the chunk-id key and the public key
    only, and none of its keys opens a snapshot, its own included."""
    old = admin.backup(src, time=1.0)
    new = writer.backup(src, time=2.0)
    doc = json.loads((admin.keys_dir / writer.key_id).read_text())
    kek = hashlib.scrypt(
        WRITER.encode(), salt=base64.b64decode(doc["salt"]), n=doc["n"], r=doc["r"], p=doc["p"],
        maxmem=256 << 20, dklen=32,
    )  # fmt: skip
    payload = unwrap(kek, base64.b64decode(doc["data"]), b"chaoskit-key\0" + admin.id.encode())
    assert payload is not None and sorted(json.loads(payload)) == ["mac_key", "public", "role"]
    assert admin.master is not None and admin.master.enc_key not in payload
    assert base64.b64encode(admin.master.enc_key) not in payload
    for snap_id in (old.id, new.id):
        with pytest.raises(IntegrityError):
            load_snapshot(writer.snap_dir, writer.keyring, snap_id)
    sealed = unframe(snapshot_parts(admin.snap_dir / new.id)[1])
    assert sealed is not None
    with pytest.raises(IntegrityError):
        writer.cipher.open(sealed[1], b"chaoskit-snapshot\0" + new.id.encode(), what="x")


def test_writer_deduplicates_without_reading_old_data(
    admin: Repository, writer: Repository, src: Path
) -> None:
    first = admin.backup(src, time=1.0)
    assert first.summary["new_bytes"] > 3 << 20
    again = writer.backup(src, time=2.0)
    assert again.summary["new_bytes"] == 0 and again.summary["stored_bytes"] == 0
    (src / "more.bin").write_bytes(os.urandom(1 << 20))
    third = writer.backup(src, time=3.0)
    assert third.summary["new_bytes"] == 1 << 20
    assert writer.backup(src, time=4.0).summary["new_bytes"] == 0
    assert admin.check(read_data=True).ok


def test_prune_copies_a_writers_chunks_and_keeps_them_readable(
    admin: Repository, writer: Repository, tmp_path: Path
) -> None:
    shared, big = os.urandom(100_000), os.urandom(2 << 20)
    src = tree(tmp_path / "src", {"shared": shared, "big": big})
    first = writer.backup(src, time=1.0)
    (src / "big").unlink()
    (src / "new").write_bytes(os.urandom(50_000))
    second = writer.backup(src, time=2.0)
    stats = admin.forget(ids=[first.id], prune=True).prune
    assert stats is not None and stats.packs_rewritten == 1
    admin.restore(second.id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert admin.check(read_data=True).ok
    # the pruned index is readable by the writer: it still deduplicates
    assert writer.backup(src, time=3.0).summary["new_bytes"] == 0


def test_damaged_envelope_is_found_by_check(
    admin: Repository, writer: Repository, src: Path, tmp_path: Path
) -> None:
    snap = writer.backup(src)
    (pack,) = list_packs(admin.data_dir).values()
    data = bytearray(pack.read_bytes())
    data[-40] ^= 1  # inside the envelope, before its length and the header length
    os.chmod(pack, 0o644)
    pack.write_bytes(bytes(data))
    report = admin.check(read_data=True)
    assert not report.ok and snap.short_id in report.affected_snapshots
    with pytest.raises(IntegrityError):
        admin.restore(snap.id, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_key_list_roles_and_passwd_keeps_the_role(admin: Repository, src: Path) -> None:
    roles = {k.role for k in admin.list_keys()}
    assert roles == {"admin", "writer", "reader", "operator"}
    assert len(admin.list_keys()) == 4  # the recipient key pair is no password key
    recipients = [
        k for k in keyfiles.key_ids(admin.keys_dir)
        if json.loads((admin.keys_dir / k).read_text()).get("kind") == "recipient"
    ]  # fmt: skip
    assert len(recipients) == 1
    with pytest.raises(ConfigError, match="matches 0 key files"):
        admin.remove_key(recipients[0])
    writer = open_repository(admin.root, WRITER)
    writer.change_password("new writer pw", scrypt_n=N)
    reopened = open_repository(admin.root, "new writer pw")
    assert reopened.role == "writer"
    reopened.backup(src)
    assert len(admin.snapshots()) == 1
    with pytest.raises(ConfigError, match="role 'root' is not one of admin, operator"):
        admin.add_key("x", role="root", scrypt_n=N)
    assert admin.check().ok


def test_a_second_writer_shares_the_recipient(admin: Repository, src: Path) -> None:
    admin.add_key("second writer", role="writer", scrypt_n=N)
    open_repository(admin.root, "second writer").backup(src, time=1.0)
    open_repository(admin.root, WRITER).backup(src, time=2.0)
    assert len(open_repository(admin.root, READER).snapshots()) == 2
    assert len(keyfiles.load_recipients(admin.keys_dir, admin.id, admin.master)) == 1  # type: ignore[arg-type]


def test_format_one_repository_keeps_working_and_takes_a_writer(tmp_path: Path) -> None:
    """A repository as chaoskit wrote it before roles (index files sealed with the master
    key, no role in the key file): every operation works, and after a writer key is
    added, the writer backs up; it deduplicates against old data once prune re-indexes."""
    repo = init_repository(tmp_path / "repo", ADMIN, scrypt_n=N)
    src = tree(tmp_path / "src", {"a": os.urandom(1 << 20)})
    old = repo.backup(src, time=1.0)
    for name in list_index_files(repo.index_dir):  # as format 1 sealed them
        path, aad = repo.index_dir / name, b"chaoskit-index\0" + name.encode()
        path.write_bytes(
            repo.cipher.seal(repo.keyring.index.open(path.read_bytes(), aad, what=name), aad)
        )
    (key_file,) = repo.keys_dir.iterdir()
    doc = json.loads(key_file.read_text())
    del doc["role"], doc["mac"]
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    doc["mac"] = repo.cipher.mac(body)
    key_file.write_text(json.dumps(doc))
    legacy = open_repository(repo.root, ADMIN)
    assert legacy.role == "admin" and legacy.check(read_data=True).ok
    legacy.restore(old.id, tmp_path / "out")
    legacy.add_key(WRITER, role="writer", scrypt_n=N)
    writer = open_repository(repo.root, WRITER)
    assert writer.backup(src, time=2.0).summary["new_bytes"] == 1 << 20  # old index unreadable
    legacy.prune()
    assert writer.backup(src, time=3.0).summary["new_bytes"] == 0
    assert legacy.check(read_data=True).ok and len(legacy.snapshots()) == 3
