"""First sight of new content: checked against its producer's manifest before it is
backed up, and quarantined when it does not match.

Part of the store guard (:class:`chaoskit.dr.protect.store_guard.StoreGuard` mixes this in):
a recovery point is taken only of content that matches what its producer wrote
(:mod:`chaoskit.dr.protect.manifest`), or, without a manifest, at first sight.  Refused content
was never backed up, so it cannot be restored: the repair moves it aside
(:mod:`chaoskit.dr.protect.quarantine`) and confirms that what is left serves correctly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoskit.atomic import atomic_write_text
from chaoskit.dr.protect.manifest import (
    CHECKPOINT_SUFFIX,
    RULE_MANIFEST,
    Verdict,
    vet_backed_up,
    vet_version,
)
from chaoskit.dr.protect.quarantine import move_aside, quarantine_dir
from chaoskit.dr.protect.repository.agent import BackupAgent, discard_snapshot
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import Snapshot
from chaoskit.dr.protect.repository.source import STATE_FILE, parse_checkpoint_state
from chaoskit.journal import Journal
from chaoskit.model import version_dirs

VERSION_TAG = "model-version"


@dataclass
class Damage:
    """What the scanner found: which recovery point covers it and what differs."""

    kind: str  # "model-version", "checkpoint-files", "checkpoint-state" or one of REFUSED
    path: Path
    problems: list[str]
    candidates: list[Snapshot] = field(default_factory=list)
    verdict: Verdict | None = None
    """For refused content: the producer manifest's verdict."""


REFUSED = ("model-version-refused", "checkpoint-refused")
"""Damage kinds of new content that did not match its producer's manifest."""


class FirstSight:
    """The store guard's checks of new versions and refused checkpoints (a mixin)."""

    repo: Repository
    writer: Repository
    journal: Journal
    stack: Any
    model_base: Path
    checkpoint_dir: Path | None
    agent: BackupAgent | None
    versions: dict[int, Snapshot]
    refused_versions: dict[int, Verdict]
    _expects_manifests: bool

    # provided by the store guard
    @property
    def _has_state(self) -> bool:
        raise NotImplementedError

    @property
    def _snapshots(self) -> list[Snapshot]:
        raise NotImplementedError

    def _verify(self, path: Path, snap: Snapshot, *, ignore: tuple[str, ...] = ()) -> list[str]:
        raise NotImplementedError

    def _verify_checkpoint(self, snap: Snapshot) -> list[str]:
        raise NotImplementedError

    def _newest_first(self) -> list[Snapshot]:
        raise NotImplementedError

    def _restore_state_file(self, candidates: list[Snapshot]) -> tuple[Snapshot | None, bool]:
        raise NotImplementedError

    def _confirm(self) -> None:
        raise NotImplementedError

    def _finish(self, target: Path, restored: Snapshot | None, intact: bool, *,
                action: str = "restore", **details: Any) -> None:  # fmt: skip
        raise NotImplementedError

    def _backup_new_versions(self) -> None:
        """Back up each new version that matches its producer manifest, checked on the
        live files and again on what the backup read; refuse the others.  Once a version
        had a manifest, one without is refused too (it is written before the rename)."""
        present = version_dirs(self.model_base)
        for gone in self.refused_versions.keys() - present.keys():
            del self.refused_versions[gone]
        for version, path in sorted(present.items()):
            if version in self.versions or version in self.refused_versions:
                continue
            if self.versions and version < max(self.versions):
                continue
            verdict = vet_version(path, version, require=self._expects_manifests)
            self._expects_manifests |= verdict.parsed is not None
            if verdict.ok:
                created = path.stat().st_mtime
                snap = self.writer.backup(
                    path, tags=(VERSION_TAG,), time=created, checkpoint_step=version,
                    model_name=self.stack.model_name, model_version=str(version),
                    summary={"rule": verdict.rule},
                )  # fmt: skip
                verdict = vet_backed_up(verdict, "model-version", str(version), snap.files)
                if verdict.ok:
                    self.versions[version] = snap
                    self.journal.record(
                        "backup.recovery_point", snapshot=snap.id, version=version,
                        step=version, wall_created=created, rule=verdict.rule,
                        manifest=None if verdict.manifest is None else str(verdict.manifest),
                    )  # fmt: skip
                    continue
                discard_snapshot(self.repo, snap)
            self.refused_versions[version] = verdict

    def _refused(self) -> list[Damage]:
        """New content its producer's manifest refused (versions, then checkpoints)."""
        found = [
            Damage("model-version-refused", self.model_base / str(version),
                   list(verdict.problems), verdict=verdict)  # fmt: skip
            for version, verdict in sorted(self.refused_versions.items())
        ]
        if self.agent is not None and self.checkpoint_dir is not None:
            found += [
                Damage("checkpoint-refused", self.checkpoint_dir / name,
                       list(verdict.problems), verdict=verdict)  # fmt: skip
                for name, verdict in sorted(self.agent.refused.items())
            ]
        return found

    def _quarantine(self, damage: Damage) -> None:
        """Move refused content out of the watched directory (nothing restores it: it was
        never backed up), then confirm what now serves (or resumes) verifies."""
        assert damage.verdict is not None
        reason = {"manifest": str(damage.verdict.manifest), "problems": damage.problems[:5]}
        if damage.kind == "model-version-refused":
            to = quarantine_dir(self.model_base)
            moved = move_aside(self.model_base, [damage.path.name], to)
            self.refused_versions.pop(int(damage.path.name), None)
            self.journal.record("model.quarantined", version=int(damage.path.name),
                                files=moved, to=str(to), **reason)  # fmt: skip
            present = version_dirs(self.model_base)
            serving = max((v for v in self.versions if v in present), default=None)
            if serving is None:
                self._finish(damage.path, None, False)
                return
            snap = self.versions[serving]
            intact = not self._verify(present[serving], snap)
            self._finish(damage.path, snap, intact, action="quarantine", serving_version=serving,
                         kind="model-version")  # fmt: skip
            return
        assert self.agent is not None and self.checkpoint_dir is not None
        name = damage.path.relative_to(self.checkpoint_dir).as_posix()
        manifest = damage.verdict.parsed
        files = [*(manifest.files if manifest else ()), f"{name}{CHECKPOINT_SUFFIX}"]
        if not self._has_state:
            files.append(name)
        to = quarantine_dir(self.checkpoint_dir)
        moved = move_aside(self.checkpoint_dir, sorted(set(files)), to)
        self.agent.refused.pop(name, None)
        self.journal.record("checkpoint.quarantined", checkpoint=name, files=moved, to=str(to),
                            **reason)  # fmt: skip
        if not self._snapshots:
            self.journal.record("recovered", action="quarantine", target=str(damage.path))
            self._confirm()
            return
        if self._has_state:  # the state file still names the checkpoint moved away
            restored, intact = self._unlist(name)
        else:
            restored = self._newest_first()[0]
            intact = not self._verify_checkpoint(restored)
        self._finish(damage.path, restored, intact, action="quarantine", kind="checkpoint-files")

    def _unlist(self, name: str) -> tuple[Snapshot | None, bool]:
        """tf: rewrite the live state file without *name*, when that makes the newest
        recovery point (verified) the latest; else put back the state file of the newest
        recovery point still present (which may list checkpoints swept since)."""
        assert self.checkpoint_dir is not None
        newest = self._newest_first()
        path = self.checkpoint_dir / STATE_FILE
        try:
            rewritten = state_without(path.read_text("utf-8", "replace"), name)
        except OSError:
            rewritten = None
        state = None if rewritten is None else parse_checkpoint_state(rewritten)
        if state is not None and newest:
            wanted = str(newest[0].summary.get("checkpoint"))
            if Path(state.latest).name == wanted and not self._verify_checkpoint(newest[0]):
                atomic_write_text(path, rewritten or "")
                return newest[0], True
        return self._restore_state_file(newest)


def state_without(text: str, prefix: str) -> str | None:
    """A CheckpointManager state file *text* with checkpoint *prefix* unlisted and the
    newest one left named latest (None when unreadable or nothing is left)."""
    state = parse_checkpoint_state(text)
    if state is None:
        return None
    times: list[float | None] = [*state.all_times]
    times += [None] * (len(state.all_paths) - len(times))
    kept = [(p, t) for p, t in zip(state.all_paths, times, strict=False)
            if Path(p).name != Path(prefix).name]  # fmt: skip
    if not kept:
        return None
    lines = [f'model_checkpoint_path: "{kept[-1][0]}"']
    lines += [f'all_model_checkpoint_paths: "{p}"' for p, _ in kept]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for _, t in kept if t is not None]
    lines += [ln for ln in text.splitlines() if ln.startswith("last_preserved_timestamp")]
    return "\n".join(lines) + "\n"


def rule_fields(damage: Damage) -> dict[str, Any]:
    """The fields a detection of refused content adds: the rule and the manifest."""
    if damage.verdict is None:
        return {}
    return {"rule": RULE_MANIFEST, "manifest": str(damage.verdict.manifest)}
