"""Repository core: init/open, backup, dedup, restore with verification, verify, keys."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.errors import ConfigError, IntegrityError, RepositoryError

PW = "correct horse"


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return init_repository(tmp_path / "repo", PW, scrypt_n=2**10)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "src",
        {
            "a.bin": os.urandom(3 << 20),
            "sub/b.txt": b"hello\n" * 1000,
            "sub/deeper/empty": b"",
            "c.bin": os.urandom(100),
        },
    )


def test_backup_restore_roundtrip_is_byte_identical(
    repo: Repository, tree: Path, tmp_path: Path
) -> None:
    (tree / "emptydir").mkdir()
    os.chmod(tree / "c.bin", 0o600)
    snap = repo.backup(tree, tags=["nightly"])
    result = repo.restore(snap.id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(tree)
    assert (tmp_path / "out" / "emptydir").is_dir()
    assert (tmp_path / "out" / "c.bin").stat().st_mode & 0o777 == 0o600
    assert result.files == 4 and not result.failures
    assert snap.tags == ["nightly"] and snap.hostname and snap.source == str(tree)
    # nothing but the restored directory is left beside the target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "repo", "src"]


def test_stored_bytes_are_encrypted_and_ids_are_keyed(repo: Repository, tmp_path: Path) -> None:
    secret = b"plaintext-marker-" * 4096
    src = make_tree(tmp_path / "s", {"f": secret})
    repo.backup(src)
    for path in repo.root.rglob("*"):
        if path.is_file():
            assert b"plaintext-marker-" not in path.read_bytes(), path
    # the same content in another repository gets another chunk id
    other = init_repository(tmp_path / "repo2", PW, scrypt_n=2**10)
    assert other.cipher.chunk_id(secret) != repo.cipher.chunk_id(secret)


def test_identical_content_is_stored_once(repo: Repository, tmp_path: Path) -> None:
    blob = os.urandom(2 << 20)
    src = make_tree(tmp_path / "s", {"one": blob, "two": blob, "sub/three": blob})
    snap = repo.backup(src)
    assert snap.summary["new_bytes"] == len(blob)
    again = repo.backup(src)
    assert again.summary["new_bytes"] == 0
    packs = [p for p in (repo.root / "data").rglob("*") if p.is_file()]
    assert 0 < len(packs) <= 2  # chunks are grouped into packs, not one file each


def test_unchanged_files_are_not_reread(repo: Repository, tree: Path, tmp_path: Path) -> None:
    hour_ago = time.time() - 3600
    for path in tree.rglob("*"):
        os.utime(path, (hour_ago, hour_ago))
    repo.backup(tree)
    (tree / "c.bin").write_bytes(b"changed")
    snap = repo.backup(tree)
    assert snap.summary["unchanged_files"] == 3
    assert snap.parent is not None
    # same size and same mtime, new content: the ctime gives it away
    (tree / "a.bin").write_bytes(os.urandom((tree / "a.bin").stat().st_size))
    os.utime(tree / "a.bin", (hour_ago, hour_ago))
    snap = repo.backup(tree)
    assert snap.summary["unchanged_files"] == 2
    repo.restore(snap.id, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(tree)


def test_files_written_just_before_the_parent_are_reread(repo: Repository, tree: Path) -> None:
    repo.backup(tree)
    snap = repo.backup(tree)
    assert snap.summary["unchanged_files"] == 0  # racily clean: cannot trust the times


def test_restore_repairs_a_damaged_directory(repo: Repository, tree: Path, tmp_path: Path) -> None:
    original = read_tree(tree)
    repo.backup(tree)
    with open(tree / "a.bin", "r+b") as f:
        f.seek(12345)
        f.write(b"\xff\x00")
    (tree / "sub/b.txt").unlink()
    (tree / "junk").write_bytes(b"x")
    report = repo.verify(tree)
    assert report.missing == ["sub/b.txt"] and list(report.changed) == ["a.bin"]
    assert report.extra == ["junk"] and not report.ok
    repo.restore("latest", tree)
    assert read_tree(tree) == original
    assert repo.verify(tree).ok


def test_latest_is_newest_checkpoint_time(repo: Repository, tree: Path) -> None:
    first = repo.backup(tree, time=2000.0, checkpoint_step=2)
    repo.backup(tree, time=1000.0, checkpoint_step=1)
    assert repo.snapshot("latest").id == first.id
    assert repo.snapshot(first.id[:6]).id == first.id
    with pytest.raises(ConfigError, match="'zzzz' matches 0 snapshots"):
        repo.snapshot("zzzz")


def test_checkpoint_state_file_gives_step_and_creation_time(
    repo: Repository, tmp_path: Path
) -> None:
    src = make_tree(
        tmp_path / "ckpts",
        {
            "ckpt-7.index": b"x",
            "checkpoint": b'model_checkpoint_path: "ckpt-9"\nall_model_checkpoint_paths: "ckpt-7"\n'
            b'all_model_checkpoint_paths: "ckpt-9"\n'
            b"all_model_checkpoint_timestamps: 1700000000.5\n"
            b"all_model_checkpoint_timestamps: 1700000100.25\n",
        },
    )
    snap = repo.backup(src)
    assert snap.checkpoint_step == 9 and snap.time == 1700000100.25
    assert snap.model_name == "ckpts"


def test_wrong_password_missing_keys_and_non_repository(
    repo: Repository, tmp_path: Path, tree: Path
) -> None:
    repo.backup(tree)
    before = read_tree(repo.root)
    with pytest.raises(RepositoryError, match="wrong password"):
        open_repository(repo.root, "nope")
    with pytest.raises(RepositoryError, match="not a chaoskit repository"):
        open_repository(tmp_path / "src", PW)
    with pytest.raises(RepositoryError, match="does not exist"):
        open_repository(tmp_path / "nothing", PW)
    for key in (repo.root / "keys").iterdir():
        key.rename(tmp_path / key.name)
    with pytest.raises(RepositoryError, match="no key files"):
        open_repository(repo.root, PW)
    for key in tmp_path.glob("[0-9a-f]" * 32):
        key.rename(repo.root / "keys" / key.name)
    assert read_tree(repo.root) == before
    open_repository(repo.root, PW)


def test_newer_format_version_is_refused(repo: Repository) -> None:
    config = json.loads((repo.root / "config").read_text())
    config["version"] = 99
    (repo.root / "config").write_text(json.dumps(config))
    with pytest.raises(RepositoryError, match="format version 99"):
        open_repository(repo.root, PW)


def test_init_refuses_existing_repository_and_nonempty_dir(repo: Repository, tree: Path) -> None:
    with pytest.raises(RepositoryError, match="already a chaoskit repository"):
        init_repository(repo.root, PW)
    with pytest.raises(RepositoryError, match="not an empty directory"):
        init_repository(tree, PW)


def test_key_add_list_remove_passwd(repo: Repository, tree: Path) -> None:
    repo.backup(tree)
    second = repo.add_key("second password", scrypt_n=2**10)
    assert {k.id for k in repo.list_keys()} == {repo.key_id, second}
    assert open_repository(repo.root, "second password").key_id == second
    with pytest.raises(RepositoryError, match="opened now"):
        repo.remove_key(repo.key_id)
    repo.remove_key(second[:10])
    with pytest.raises(RepositoryError, match="wrong password"):
        open_repository(repo.root, "second password")
    repo.change_password("third", scrypt_n=2**10)
    with pytest.raises(RepositoryError, match="wrong password"):
        open_repository(repo.root, PW)
    reopened = open_repository(repo.root, "third")
    assert len(reopened.list_keys()) == 1 and reopened.snapshots()


def test_restore_target_that_is_a_file_is_refused(
    repo: Repository, tree: Path, tmp_path: Path
) -> None:
    repo.backup(tree)
    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a directory"):
        repo.restore("latest", tmp_path / "afile")


def test_restore_of_missing_chunk_keeps_target_and_names_file(
    repo: Repository, tree: Path, tmp_path: Path
) -> None:
    snap = repo.backup(tree)
    victim = next(f for f in snap.files if f.path == "c.bin")
    repo_index = repo.load_index()
    loc = repo_index.get(victim.chunk_ids[0])
    assert loc is not None
    target = make_tree(tmp_path / "target", {"old": b"old"})
    pack = next((repo.root / "data").rglob(loc.pack))
    data = bytearray(pack.read_bytes())
    data[loc.offset + 20] ^= 0x01
    os.chmod(pack, 0o644)
    pack.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"c\.bin: chunk .* authentication failed") as err:
        repo.restore("latest", target)
    assert "left unchanged" in str(err.value)
    assert read_tree(target) == {"old": b"old"}
    partial = tmp_path / f"target.partial-{snap.short_id}"
    assert read_tree(partial) == {k: v for k, v in read_tree(tree).items() if k != "c.bin"}


def test_file_removed_after_the_scan_is_skipped_with_warning(
    repo: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CheckpointManager deletes old checkpoints while a backup may be running."""
    from chaoskit.dr.protect.repository import backup as backup_module

    real_scan = backup_module.scan

    def scan_then_delete(*args: object, **kwargs: object) -> object:
        found = real_scan(*args, **kwargs)  # type: ignore[arg-type]
        (tree / "c.bin").unlink()  # the race, made deterministic
        return found

    monkeypatch.setattr(backup_module, "scan", scan_then_delete)
    with pytest.warns(UserWarning, match=r"c\.bin vanished during the backup"):
        snap = repo.backup(tree)
    assert sorted(f.path for f in snap.files if f.type == "file") == [
        "a.bin",
        "sub/b.txt",
        "sub/deeper/empty",
    ]
    assert repo.check(read_data=True).ok
