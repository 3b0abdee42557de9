"""Producer manifests, the backup agent's use of them, and quarantine (no TensorFlow)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_repository_agent import save

from chaoskit.dr import BackupAgent, init_repository
from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.protect.checkpoints import FilesFormat, bundle_files, checkpoint_format
from chaoskit.dr.protect.first_sight import state_without
from chaoskit.dr.protect.manifest import (
    RULE_FIRST_SIGHT,
    RULE_MANIFEST,
    VERSION_MANIFEST,
    ManifestError,
    checkpoint_manifest_path,
    read_manifest,
    remove_unlisted,
    vet_backed_up,
    vet_checkpoint,
    vet_version,
    write_checkpoint_manifest,
    write_version_manifest,
)
from chaoskit.dr.protect.quarantine import move_aside, quarantine_dir
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.source import parse_checkpoint_state
from chaoskit.dr.protect.store_guard import StoreGuard
from chaoskit.journal import Journal, read_journal


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)


def make_version(base: Path, version: int, *, manifest: bool = True) -> Path:
    """A version directory with a few files (and its manifest, written last)."""
    path = base / str(version)
    (path / "variables").mkdir(parents=True)
    (path / "assets.extra").mkdir()
    (path / "saved_model.pb").write_bytes(b"graph of version %d" % version)
    (path / "variables" / "variables.index").write_bytes(b"index %d" % version)
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(bytes([version]) * 64)
    (path / "assets.extra" / "chaoskit_canary.json").write_text(json.dumps({"version": version}))
    if manifest:
        write_version_manifest(path, version, version, canary="assets.extra/chaoskit_canary.json")
    return path


def test_a_version_matches_its_own_manifest(tmp_path: Path) -> None:
    path = make_version(tmp_path, 3)
    manifest = read_manifest(path / VERSION_MANIFEST)
    assert (manifest.kind, manifest.name, manifest.step) == ("model-version", "3", 3)
    assert "assets.extra/chaoskit_canary.json" in manifest.files
    assert VERSION_MANIFEST not in manifest.files
    verdict = vet_version(path, 3)
    assert (
        verdict.ok and verdict.rule == RULE_MANIFEST and verdict.manifest == path / VERSION_MANIFEST
    )


def test_each_kind_of_difference_is_named_with_the_manifest(tmp_path: Path) -> None:
    path = make_version(tmp_path, 3)
    (path / "saved_model.pb").write_bytes(b"graph of version 9")  # same size, other bytes
    (path / "variables" / "variables.index").write_bytes(b"longer index")
    (path / "assets.extra" / "chaoskit_canary.json").unlink()
    (path / "junk").write_text("added")
    problems = vet_version(path, 3).problems
    where = str(path / VERSION_MANIFEST)
    assert f"changed  saved_model.pb (SHA-256 differs from {where})" in problems
    assert any(p.startswith("changed  variables/variables.index (size") for p in problems)
    assert f"missing  assets.extra/chaoskit_canary.json (listed in {where})" in problems
    assert f"extra    junk (not in {where})" in problems
    assert len(problems) == 4


def test_a_stale_copy_of_an_older_version_is_refused(tmp_path: Path) -> None:
    """The older version's files and its intact manifest, copied over the newer one."""
    older = make_version(tmp_path / "models", 1)
    newer = make_version(tmp_path / "models", 2)
    shutil.rmtree(newer)
    shutil.copytree(older, newer)
    verdict = vet_version(newer, 2)
    assert verdict.rule == RULE_MANIFEST
    assert verdict.problems == (f"manifest  {newer / VERSION_MANIFEST} is of model-version 1, "
                                "not model-version 2",)  # fmt: skip


def test_without_a_manifest_first_sight_unless_the_producer_writes_them(tmp_path: Path) -> None:
    path = make_version(tmp_path, 4, manifest=False)
    assert vet_version(path, 4).ok and vet_version(path, 4).rule == RULE_FIRST_SIGHT
    required = vet_version(path, 4, require=True)
    assert required.rule == RULE_MANIFEST and not required.ok
    assert required.problems[0].startswith(f"missing  {VERSION_MANIFEST}")


@pytest.mark.parametrize("content", [b"{not json", b'{"format": "other"}', b'{"format": '
                                     b'"chaoskit-manifest/1", "files": {"a": {}}}'])  # fmt: skip
def test_an_unreadable_manifest_is_a_mismatch_naming_it(tmp_path: Path, content: bytes) -> None:
    path = make_version(tmp_path, 5)
    (path / VERSION_MANIFEST).write_bytes(content)
    with pytest.raises(ManifestError, match=str(path / VERSION_MANIFEST)):
        read_manifest(path / VERSION_MANIFEST)
    verdict = vet_version(path, 5)
    assert not verdict.ok and str(path / VERSION_MANIFEST) in verdict.problems[0]


def test_what_the_backup_read_is_checked_too(repo: Repository, tmp_path: Path) -> None:
    """Changed between the check and the backup: the snapshot's digests do not match."""
    path = make_version(tmp_path, 6)
    verdict = vet_version(path, 6)
    assert verdict.ok
    (path / "saved_model.pb").write_bytes(b"replaced after the check")
    snap = repo.backup(path)
    after = vet_backed_up(verdict, "model-version", "6", snap.files)
    assert after.rule == RULE_MANIFEST and len(after.problems) == 1
    assert after.problems[0].startswith("changed  saved_model.pb (size")
    good = make_version(tmp_path, 7)
    first = vet_version(good, 7)
    assert vet_backed_up(first, "model-version", "7", repo.backup(good).files).ok
    sight = vet_version(make_version(tmp_path, 8, manifest=False), 8)
    assert vet_backed_up(sight, "model-version", "8", []) is sight


def test_checkpoint_manifests_and_their_cleanup(tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpts"
    for step in (1, 2):
        save(ckpts, step)
        write_checkpoint_manifest(ckpts, f"ckpt-{step}", bundle_files(ckpts, f"ckpt-{step}"), step)
    assert vet_checkpoint(ckpts, "ckpt-3", ["ckpt-3.index"]) is None  # none (yet)
    verdict = vet_checkpoint(ckpts, "ckpt-2", bundle_files(ckpts, "ckpt-2"))
    assert verdict is not None and verdict.ok and verdict.rule == RULE_MANIFEST
    data = ckpts / "ckpt-2.data-00000-of-00001"
    flipped = bytearray(data.read_bytes())
    flipped[100] ^= 1
    data.write_bytes(flipped)
    verdict = vet_checkpoint(ckpts, "ckpt-2", bundle_files(ckpts, "ckpt-2"))
    assert verdict is not None and verdict.problems == (
        f"changed  ckpt-2.data-00000-of-00001 (SHA-256 differs from "
        f"{checkpoint_manifest_path(ckpts, 'ckpt-2')})",
    )
    assert remove_unlisted(ckpts, [str(ckpts / "ckpt-2")]) == ["ckpt-1.manifest.json"]
    assert sorted(p.name for p in ckpts.glob("*.manifest.json")) == ["ckpt-2.manifest.json"]
    assert FilesFormat().checkpoints(ckpts) and not any(
        c.name.endswith(".manifest.json") for c in FilesFormat().checkpoints(ckpts)
    )


def test_the_agent_backs_up_only_what_matches(repo: Repository, tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpts"
    journal = Journal(tmp_path / "journal.jsonl", source="test")
    agent = BackupAgent(repo, ckpts, journal=journal)
    now = time.time()
    save(ckpts, 1, stamp=now - 1)
    write_checkpoint_manifest(ckpts, "ckpt-1", bundle_files(ckpts, "ckpt-1"), 1)
    assert agent.poll_once() is not None and agent.expects_manifests
    save(ckpts, 2, stamp=now - 2)  # listed, but its manifest is still to come
    assert agent.poll_once() is None and not agent.refused
    write_checkpoint_manifest(ckpts, "ckpt-2", bundle_files(ckpts, "ckpt-2"), 2)
    data = ckpts / "ckpt-2.data-00000-of-00001"
    data.write_bytes(bytes(len(data.read_bytes())))  # damaged before its first backup
    assert agent.poll_once() is None
    assert (
        list(agent.refused) == ["ckpt-2"] and "ckpt-2.data" in agent.refused["ckpt-2"].problems[0]
    )
    assert agent.poll_once() is None  # refused once, not retried
    save(ckpts, 3, stamp=now - 100)  # no manifest long after its save: the producer died
    snap = agent.poll_once()
    assert snap is not None and snap.summary["rule"] == RULE_FIRST_SIGHT
    journal.close()
    points = [e for e in read_journal(journal.path) if e["event"] == "backup.recovery_point"]
    assert [(e["checkpoint"], e["rule"]) for e in points] == [
        ("ckpt-1", RULE_MANIFEST), ("ckpt-3", RULE_FIRST_SIGHT),
    ]  # fmt: skip
    assert points[0]["manifest"] == str(checkpoint_manifest_path(ckpts, "ckpt-1"))
    assert sorted(s.summary["checkpoint"] for s in repo.snapshots()) == ["ckpt-1", "ckpt-3"]


def test_a_producer_without_manifests_is_never_kept_waiting(
    repo: Repository, tmp_path: Path
) -> None:
    ckpts = tmp_path / "ckpts"
    agent = BackupAgent(repo, ckpts)
    save(ckpts, 1, stamp=time.time())
    snap = agent.poll_once()
    assert snap is not None and snap.summary["rule"] == RULE_FIRST_SIGHT


def test_move_aside_moves_and_never_overwrites(tmp_path: Path) -> None:
    base = tmp_path / "models"
    make_version(base, 1)
    make_version(base, 2)
    to = quarantine_dir(base)
    assert to == tmp_path / ".models-quarantine"
    assert move_aside(base, ["2", "9"], to) == ["2"]
    assert not (base / "2").exists() and (to / "2" / "saved_model.pb").is_file()
    make_version(base, 2)
    assert move_aside(base, ["2"], to) == ["2"]
    assert len(list(to.iterdir())) == 2  # the first one kept, the second beside it


def test_a_quarantined_checkpoint_is_unlisted_from_the_state_file() -> None:
    text = (
        'model_checkpoint_path: "ckpt-3"\n'
        'all_model_checkpoint_paths: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-3"\n'
        "all_model_checkpoint_timestamps: 100.5\nall_model_checkpoint_timestamps: 200.5\n"
        "last_preserved_timestamp: 99.0\n"
    )
    rewritten = state_without(text, "ckpt-3")
    assert rewritten is not None
    state = parse_checkpoint_state(rewritten)
    assert state is not None and state.latest == "ckpt-2" and state.all_paths == ("ckpt-2",)
    assert state.all_times == (100.5,) and "last_preserved_timestamp: 99.0" in rewritten
    assert state_without('model_checkpoint_path: "ckpt-3"\n', "ckpt-3") is None
    assert state_without("garbage", "ckpt-3") is None


def guard_over(tmp_path: Path, *, repair: bool = True) -> StoreGuard:
    base = tmp_path / "models"
    base.mkdir(exist_ok=True)
    stack = SimpleNamespace(
        goldens=Goldens(base), model_base_path=base, checkpoint_dir=None, model_name="m",
        checkpoint_format=checkpoint_format("tf"), trainer=None, backend=None,
    )  # fmt: skip
    repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    return StoreGuard(repo, stack, Journal(tmp_path / "journal.jsonl"), repair=repair)


def test_the_guard_refuses_a_version_without_the_manifest_its_producer_writes(
    tmp_path: Path,
) -> None:
    """Observe mode: journaled once, at first sight, never backed up, left in place."""
    guard = guard_over(tmp_path, repair=False)
    make_version(guard.model_base, 1)
    guard._backup_new_versions()
    assert sorted(guard.versions) == [1]
    make_version(guard.model_base, 2, manifest=False)  # e.g. its assets.extra was deleted
    guard._backup_new_versions()
    guard._observe(None)
    guard._observe(None)
    guard.journal.close()
    events = list(read_journal(guard.journal.path))
    [point] = [e for e in events if e["event"] == "backup.recovery_point"]
    assert point["version"] == 1 and point["rule"] == RULE_MANIFEST
    [detected] = [e for e in events if e["event"] == "detected"]
    assert detected["observe"] is True and detected["rule"] == RULE_MANIFEST
    assert detected["target"] == str(guard.model_base / "2")
    assert detected["manifest"] == str(guard.model_base / "2" / VERSION_MANIFEST)
    assert [s.model_version for s in guard.repo.snapshots()] == ["1"]
    assert (guard.model_base / "2").is_dir()  # observe: a platform is to fix it
    shutil.rmtree(guard.model_base / "2")
    guard._backup_new_versions()
    assert guard.refused_versions == {}  # gone: forgotten, a new export may take its number
