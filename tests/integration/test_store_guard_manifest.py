"""Damage between the producer's write and the first backup is caught, not laundered.

The race of issue 12: the trainer exported a version, a stale-model fault replaced it
with the previous version's files a millisecond later, and the store guard then took
its first recovery point of that version from the damaged files, so the damage became
the recovery point and was never detected.  The real trainer writes a producer
manifest into every version and beside every checkpoint; the guard checks new content
against it before backing it up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_serving import Server, install

from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.protect.checkpoints import bundle_files, checkpoint_format
from chaoskit.dr.protect.manifest import (
    RULE_MANIFEST,
    VERSION_MANIFEST,
    checkpoint_manifest_path,
    vet_checkpoint,
    vet_version,
)
from chaoskit.dr.protect.quarantine import quarantine_dir
from chaoskit.dr.protect.repository.repo import Repository, init_repository
from chaoskit.dr.protect.repository.source import STATE_FILE
from chaoskit.dr.protect.store_guard import StoreGuard
from chaoskit.faults.base import FaultContext
from chaoskit.faults.weights import StaleModel
from chaoskit.journal import Journal, read_journal
from chaoskit.model import version_dirs
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real trainer, 40 steps: versions 0, 20, 40; checkpoints ckpt-20, ckpt-40."""
    root = tmp_path_factory.mktemp("trained")
    proc = subprocess.run(
        [
            sys.executable, "-m", "chaoskit.trainer",
            "--model-base-path", str(root / "models"), "--checkpoint-dir", str(root / "ckpt"),
            "--export-every", "20", "--checkpoint-every", "10", "--max-to-keep", "2",
            "--max-steps", "40", "--step-delay", "0",
        ],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return root


def stack_for(root: Path, **overrides: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "goldens": Goldens(root / "models"), "data_dir": root, "model_base_path": root / "models",
        "checkpoint_dir": None, "model_name": "reference", "trainer": None, "backend": None,
        "checkpoint_format": checkpoint_format("tf"),
    }  # fmt: skip
    fields.update(overrides)
    return SimpleNamespace(**fields)


def events(journal: Journal, name: str) -> list[dict[str, Any]]:
    return [e for e in read_journal(journal.path) if e["event"] == name]


def test_the_trainer_writes_manifests_that_verify(trained: Path) -> None:
    versions = version_dirs(trained / "models")
    assert sorted(versions) == [0, 20, 40]
    for version, path in versions.items():
        manifest = json.loads((path / VERSION_MANIFEST).read_text())
        assert manifest["canary"] == "assets.extra/chaoskit_canary.json"
        assert {"saved_model.pb", "variables/variables.index", manifest["canary"]} <= set(
            manifest["files"]
        )
        assert vet_version(path, version).ok
    ckpt = trained / "ckpt"
    # CheckpointManager kept two; the trainer deleted the manifests of the ones it swept
    assert sorted(p.name for p in ckpt.glob("*.manifest.json")) == [
        "ckpt-30.manifest.json", "ckpt-40.manifest.json",
    ]  # fmt: skip
    assert not list(ckpt.glob("ckpt-10.*")) and not list(ckpt.glob("ckpt-20.*"))
    for prefix in ("ckpt-30", "ckpt-40"):
        verdict = vet_checkpoint(ckpt, prefix, bundle_files(ckpt, prefix))
        assert verdict is not None and verdict.ok and verdict.rule == RULE_MANIFEST


@pytest.fixture
def serving(trained: Path, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A real model server over versions 0 and 20 (version 40 not exported yet)."""
    base = tmp_path / "models"
    base.mkdir()
    for version in (0, 20):
        install(trained / "models" / str(version), base, version)
    server = Server(tmp_path, base)
    try:
        client = server.client()
        wait_until(lambda: client.status().ok and any(
            v["version"] == "20" and v["state"] == "AVAILABLE"
            for v in client.status().body["model_version_status"]
        ), 60, what="version 20 AVAILABLE")  # fmt: skip
        yield server, base
    finally:
        server.kill()


def test_a_stale_model_before_the_first_backup_is_detected_not_backed_up(
    trained: Path, tmp_path: Path, serving: tuple[Server, Path]
) -> None:
    server, base = serving
    stack = stack_for(tmp_path, client=lambda timeout: server.client())
    repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    journal = Journal(tmp_path / "journal.jsonl")
    guard = StoreGuard(repo, stack, journal, confirm_timeout=30)
    guard._backup_new_versions()  # versions 0 and 20 have their recovery points
    assert sorted(guard.versions) == [0, 20]
    # the trainer exports version 40; the fault lands before the guard's next look
    install(trained / "models" / "40", base, 40)
    StaleModel("model:latest").inject(FaultContext(journal, stack=stack))
    guard.start()
    try:
        wait_until(
            lambda: events(journal, "steady_state.ok")
            or any(e["version"] == 40 for e in events(journal, "backup.recovery_point")),
            60, what="steady state confirmed (or version 40 backed up)",
        )  # fmt: skip
    finally:
        guard.stop()
    [detected] = events(journal, "detected")
    assert detected["signal"] == "integrity" and detected["rule"] == RULE_MANIFEST
    assert detected["manifest"] == str(base / "40" / VERSION_MANIFEST)
    assert detected["target"] == str(base / "40")
    assert any("is of model-version 20, not model-version 40" in p for p in detected["problems"])
    points = events(journal, "backup.recovery_point")
    assert [(e["version"], e["rule"]) for e in points] == [(0, RULE_MANIFEST), (20, RULE_MANIFEST)]
    assert all(s.model_version != "40" for s in repo.snapshots())  # the damage is not backed up
    # no recovery point of version 40 to restore: it is moved aside, serving falls back
    [moved] = events(journal, "model.quarantined")
    assert moved["version"] == 40 and moved["to"] == str(quarantine_dir(base))
    assert sorted(version_dirs(base)) == [0, 20]
    assert (quarantine_dir(base) / "40" / "saved_model.pb").is_file()
    [done] = events(journal, "restore.done")
    assert done["action"] == "quarantine" and done["serving_version"] == 20
    assert done["integrity"] is True and done["snapshot"] == guard.versions[20].id
    assert events(journal, "steady_state.ok")[0]["version"] == 20


def back_up(repo: Repository, directory: Path, prefix: str, state: bytes) -> Any:
    step = int(prefix.rsplit("-", 1)[1])
    return repo.backup(directory, files=bundle_files(directory, prefix),
                       extra_files={STATE_FILE: state}, checkpoint_step=step,
                       summary={"checkpoint": prefix})  # fmt: skip


def test_a_silent_checkpoint_change_before_its_backup_is_refused(
    trained: Path, tmp_path: Path
) -> None:
    """Bytes appended to the latest .data (TF does not notice) before its first backup:
    refused, set aside, and the state file put back to the newest recovery point."""
    directory = tmp_path / "ckpt"
    shutil.copytree(trained / "ckpt", directory)
    (tmp_path / "models").mkdir()
    stack = stack_for(tmp_path, checkpoint_dir=directory, client=lambda timeout: _nowhere())
    repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    journal = Journal(tmp_path / "journal.jsonl")
    guard = StoreGuard(repo, stack, journal, confirm_timeout=0.2)
    assert guard.agent is not None and guard.agent.expects_manifests
    state_at_30 = (directory / STATE_FILE).read_text().replace('"ckpt-40"', '"ckpt-30"', 1)
    guard.agent.snapshots.append(back_up(repo, directory, "ckpt-30", state_at_30.encode()))
    data = directory / "ckpt-40.data-00000-of-00001"
    with open(data, "ab") as f:
        f.write(os.urandom(64))
    assert guard.agent.poll_once() is None
    [damage] = guard.scan()
    assert damage.kind == "checkpoint-refused"
    guard._repair(damage)
    [detected] = events(journal, "detected")
    assert detected["rule"] == RULE_MANIFEST
    assert detected["manifest"] == str(checkpoint_manifest_path(directory, "ckpt-40"))
    assert any("ckpt-40.data-00000-of-00001 (size" in p for p in detected["problems"])
    assert not events(journal, "backup.recovery_point")
    assert [s.summary["checkpoint"] for s in repo.snapshots()] == ["ckpt-30"]
    [moved] = events(journal, "checkpoint.quarantined")
    assert sorted(moved["files"]) == sorted(
        [*bundle_files(trained / "ckpt", "ckpt-40"), "ckpt-40.manifest.json"]
    )
    assert not list(directory.glob("ckpt-40*"))
    assert (quarantine_dir(directory) / "ckpt-40.manifest.json").is_file()
    [done] = events(journal, "restore.done")
    assert done["action"] == "quarantine" and done["recovery_point_step"] == 30
    assert done["integrity"] is True
    assert guard.format.latest(directory).name == "ckpt-30"
    assert guard.scan() == []


def _nowhere() -> Any:
    from chaoskit.serving.client import ServingClient
    from chaoskit.stack.ports import free_port

    return ServingClient("127.0.0.1", free_port(), "reference", timeout=0.2)
