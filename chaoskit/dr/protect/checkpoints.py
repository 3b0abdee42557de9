"""What a checkpoint is in a directory of a given format, without importing TensorFlow.

The store guard, the backup agent and the storage faults ask one question of a
checkpoint directory: which checkpoints are here, which is the latest, is it completely
written, and what must a restore put back.  The answer depends on who wrote it:

- ``tf``: ``tf.train.CheckpointManager``.  Its ``checkpoint`` state file names the
  checkpoints (prefixes ``ckpt-<N>``, N is the step) and when each was written; a
  checkpoint is its ``.index`` plus data shards, complete when the index parses and
  every shard holds its tensors (:func:`bundle_complete`); a restore also puts the state
  file back, or TensorFlow would quietly find no checkpoint.
- ``keras``: the files a Keras ``ModelCheckpoint`` writes, ``*.weights.h5`` (HDF5) or
  ``*.keras`` (a zip); one file is one checkpoint.
- ``files``: any files matching a glob; one file is one checkpoint.

For ``keras`` and ``files`` the step is the number in the file name (see
:func:`step_in_name`) and the creation time the file's mtime.  Keras writes its files in
place, not through a rename, so a file counts as complete only once it has not changed
for ``settle`` seconds and, for ``.h5`` / ``.keras``, its own structure says it is whole
(HDF5 signature and end-of-file address, zip central directory).  A checkpoint is
known by its file name: a trainer that rewrites one name (a constant ``filepath`` with
``save_best_only``) must put the epoch in it (``{epoch}``), or each rewrite of a
backed-up file is taken for damage — a bit flip and a rewrite look alike on disk.
"""

from __future__ import annotations

import os
import re
import struct
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from chaoskit.dr.protect.manifest import CHECKPOINT_SUFFIX
from chaoskit.dr.protect.repository.snapshots import Snapshot
from chaoskit.dr.protect.repository.source import (
    STATE_FILE,
    CheckpointState,
    parse_checkpoint_state,
    step_of_prefix,
)
from chaoskit.errors import ConfigError, IntegrityError
from chaoskit.tfbundle import bundle_complete, read_bundle_index

SETTLE = 0.5
"""Seconds a ``keras`` / ``files`` checkpoint must stay unchanged to count as written."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_PATTERNS = ("*.weights.h5", "*.keras", "*.h5")
_FLOAT = re.compile(r"\d+\.\d+")
_DIGITS = re.compile(r"\d+")
_KNOWN_SUFFIXES = (".weights.h5", ".keras", ".h5")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: its name, the files (relative to the directory) that make it up,
    its step when the format tells it, and when it was written (wall time)."""

    name: str
    files: tuple[str, ...]
    step: int | None
    wall_created: float
    extra_files: tuple[tuple[str, bytes], ...] = ()
    """Bytes to keep beside the files in its recovery point (tf: the state file as read
    when the checkpoint was found, so a restore resolves to exactly this checkpoint)."""

    @property
    def order(self) -> tuple[int, int, float, str]:
        """Sort key, oldest first: the step where known, then the creation time."""
        return (0 if self.step is None else 1, self.step or 0, self.wall_created, self.name)


class CheckpointFormat:
    """How checkpoints of one kind lie in a directory (see the module docstring)."""

    kind: ClassVar[str] = ""
    state_files: ClassVar[tuple[str, ...]] = ()
    """Files that are not checkpoints but that a restore puts back (tf: the state file)."""

    def checkpoints(self, directory: Path) -> list[Checkpoint]:
        """The checkpoints present (tf: listed by the state file), oldest first."""
        raise NotImplementedError

    def latest(self, directory: Path) -> Checkpoint | None:
        found = self.checkpoints(directory)
        return max(found, key=lambda c: c.order) if found else None

    def candidates(self, directory: Path) -> list[Checkpoint]:
        """The checkpoints worth a recovery point now, oldest first."""
        return self.checkpoints(directory)

    def complete(
        self, directory: Path, checkpoint: Checkpoint, *, now: float | None = None
    ) -> bool:
        """True once *checkpoint* is completely written."""
        raise NotImplementedError

    def main_file(self, checkpoint: Checkpoint) -> str:
        """The file that holds the weights (what ``checkpoint:latest`` damages)."""
        return checkpoint.files[0]

    def restore_files(self, checkpoint: Checkpoint, *, with_state: bool = True) -> tuple[str, ...]:
        """What restoring *checkpoint* puts back; ``with_state`` makes it the latest."""
        return checkpoint.files + (self.state_files if with_state else ())

    def guarded(self, directory: Path, backed_up: Sequence[Checkpoint]) -> list[Checkpoint]:
        """Of the backed-up checkpoints, those whose files must be here as backed up now:
        anything else went away by the trainer's own rotation and is no damage."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class TFFormat(CheckpointFormat):
    """``tf.train.CheckpointManager`` directories: the state file says what is there."""

    kind: ClassVar[str] = "tf"
    state_files: ClassVar[tuple[str, ...]] = (STATE_FILE,)

    def _state(self, directory: Path) -> tuple[CheckpointState, bytes] | None:
        try:
            raw = (directory / STATE_FILE).read_bytes()
        except OSError:
            return None
        state = parse_checkpoint_state(raw.decode("utf-8", "replace"))
        return None if state is None else (state, raw)

    def _checkpoint(
        self, directory: Path, path: str, state: CheckpointState, raw: bytes
    ) -> Checkpoint | None:
        prefix = path
        if Path(prefix).is_absolute():
            try:
                prefix = Path(prefix).relative_to(directory).as_posix()
            except ValueError:
                return None  # the state names a checkpoint elsewhere: not this directory's
        when = state.time_of(path)
        if when is None:
            try:
                when = (directory / f"{prefix}.index").stat().st_mtime
            except OSError:
                when = 0.0
        return Checkpoint(
            name=prefix, files=bundle_files(directory, prefix), step=step_of_prefix(prefix),
            wall_created=when, extra_files=((STATE_FILE, raw),),
        )  # fmt: skip

    def checkpoints(self, directory: Path) -> list[Checkpoint]:
        found = self._state(directory)
        if found is None:
            return []
        state, raw = found
        paths = state.all_paths or (state.latest,)
        if state.latest not in paths:
            paths = (*paths, state.latest)
        listed = [self._checkpoint(directory, p, state, raw) for p in paths]
        return sorted((c for c in listed if c is not None), key=lambda c: c.order)

    def latest(self, directory: Path) -> Checkpoint | None:
        found = self._state(directory)
        return None if found is None else self._checkpoint(directory, found[0].latest, *found)

    def candidates(self, directory: Path) -> list[Checkpoint]:
        """Only the latest: CheckpointManager names it once its bundle is on disk."""
        latest = self.latest(directory)
        return [] if latest is None else [latest]

    def complete(
        self, directory: Path, checkpoint: Checkpoint, *, now: float | None = None
    ) -> bool:
        return bundle_complete(directory / checkpoint.name)

    def main_file(self, checkpoint: Checkpoint) -> str:
        data = [f for f in checkpoint.files if ".data-" in f]
        return data[0] if data else checkpoint.files[0]

    def guarded(self, directory: Path, backed_up: Sequence[Checkpoint]) -> list[Checkpoint]:
        """Those the state file lists (CheckpointManager's sweep unlists what it deletes)."""
        listed = {c.name for c in self.checkpoints(directory)}
        return [c for c in backed_up if c.name in listed]


def bundle_files(directory: Path, prefix: str) -> tuple[str, ...]:
    """Relative names of a checkpoint's ``.index`` and data shards (the shards on disk
    when the index is unreadable)."""
    try:
        shards = read_bundle_index(directory / f"{prefix}.index").num_shards
        data = [f"{prefix}.data-{i:05d}-of-{shards:05d}" for i in range(shards)]
    except (OSError, IntegrityError):
        name = Path(prefix).name
        data = sorted(
            (Path(prefix).parent / p.name).as_posix()
            for p in (directory / prefix).parent.glob(f"{name}.data-*")
        )
    return (f"{prefix}.index", *data)


def step_in_name(name: str) -> int | None:
    """The step a file name tells: its last number once the suffix (``.weights.h5``,
    ``.keras``, ``.h5``, else the last extension) and decimal numbers (a metric such as
    ``-0.45``) are left out.  ``ckpt-0012.weights.h5`` -> 12,
    ``ckpt-0003-0.45.keras`` -> 3, ``best.weights.h5`` -> None."""
    base = Path(name).name
    stem = next((base[: -len(s)] for s in _KNOWN_SUFFIXES if base.endswith(s)), None)
    if stem is None:
        stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    numbers = _DIGITS.findall(_FLOAT.sub(" ", stem))
    return int(numbers[-1]) if numbers else None


def hdf5_complete(path: Path) -> bool:
    """HDF5 signature at offset 0 and the file at least as long as its superblock's
    end-of-file address says (a truncated or half-written file is shorter)."""
    try:
        with open(path, "rb") as f:
            head = f.read(96)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if not head.startswith(HDF5_SIGNATURE) or len(head) < 16:
        return False
    version = head[8]
    if version in (0, 1):
        width, base_at = head[13], 24 if version == 0 else 28
    elif version in (2, 3):
        width, base_at = head[9], 12
    else:
        return True  # a superblock we do not know: the signature is all we can check
    if width not in (2, 4, 8) or len(head) < base_at + 3 * width:
        return False
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[width]
    (base,) = struct.unpack_from(fmt, head, base_at)
    (eof,) = struct.unpack_from(fmt, head, base_at + 2 * width)
    undefined = (1 << (8 * width)) - 1
    return eof == undefined or size >= base + eof


def zip_complete(path: Path) -> bool:
    """A zip whose central directory (written last) reads."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return True


@dataclass(frozen=True)
class FilesFormat(CheckpointFormat):
    """Each file matching ``patterns`` is one checkpoint (hidden files and producer
    manifests, ``*.manifest.json``, never are)."""

    kind: ClassVar[str] = "files"
    patterns: tuple[str, ...] = ("*",)
    settle: float = SETTLE

    def checkpoints(self, directory: Path) -> list[Checkpoint]:
        found: dict[str, Checkpoint] = {}
        for pattern in self.patterns:
            for path in directory.glob(pattern):
                rel = path.relative_to(directory).as_posix()
                if rel in found or any(part.startswith(".") for part in Path(rel).parts):
                    continue
                if rel.endswith(CHECKPOINT_SUFFIX):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue  # deleted while we looked
                if path.is_file():
                    found[rel] = Checkpoint(rel, (rel,), step_in_name(rel), st.st_mtime)
        return sorted(found.values(), key=lambda c: c.order)

    def complete(
        self, directory: Path, checkpoint: Checkpoint, *, now: float | None = None
    ) -> bool:
        now = time.time() if now is None else now
        for rel in checkpoint.files:
            path = directory / rel
            try:
                st = path.stat()
            except OSError:
                return False
            if now - st.st_mtime < self.settle:
                return False  # still being written, or just now
            if rel.endswith(".h5") and not hdf5_complete(path):
                return False
            if rel.endswith(".keras") and not zip_complete(path):
                return False
        return True

    def guarded(self, directory: Path, backed_up: Sequence[Checkpoint]) -> list[Checkpoint]:
        """A backed-up checkpoint still here is guarded (rotation deletes, it never
        rewrites); one that is gone is guarded only while no checkpoint here is newer
        than it: a trainer's rotation (keep the last N, ``save_best_only``) deletes old
        checkpoints after writing a newer one, while a deleted *latest* leaves nothing
        newer behind and is restored."""
        live = self.checkpoints(directory)
        names = {c.name for c in live}
        newest = max((c.order for c in live), default=None)
        return [c for c in backed_up if c.name in names or newest is None or c.order > newest]

    def describe(self) -> str:
        return f"{self.kind} ({', '.join(self.patterns)})"


@dataclass(frozen=True)
class KerasFormat(FilesFormat):
    """What Keras ``ModelCheckpoint`` writes: ``*.weights.h5``, ``*.keras`` (``*.h5``)."""

    kind: ClassVar[str] = "keras"
    patterns: tuple[str, ...] = KERAS_PATTERNS


FORMATS = ("tf", "keras", "files")


def checkpoint_format(kind: str, pattern: str | None = None) -> CheckpointFormat:
    """The format called *kind*; *pattern* (a glob relative to the checkpoint directory)
    narrows ``keras`` and names the files of ``files`` (default: every file)."""
    if kind not in FORMATS:
        raise ConfigError(f"unknown checkpoint format {kind!r} (choose from: {', '.join(FORMATS)})")
    if pattern is not None:
        if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise ConfigError(
                f"checkpoint pattern {pattern!r} must be a glob inside the checkpoint directory"
            )
        if kind == "tf":
            raise ConfigError(
                f"checkpoint format 'tf' takes no pattern (got {pattern!r}): "
                "CheckpointManager's state file names its checkpoints"
            )
    if kind == "tf":
        return TFFormat()
    if kind == "keras":
        return KerasFormat() if pattern is None else KerasFormat(patterns=(pattern,))
    return FilesFormat(patterns=("*",) if pattern is None else (pattern,))


def from_snapshot(snap: Snapshot, fmt: CheckpointFormat) -> Checkpoint:
    """The checkpoint a recovery point holds (its files, without the format's state files)."""
    files = tuple(f.path for f in snap.files if f.type == "file" and f.path not in fmt.state_files)
    name = str(snap.summary.get("checkpoint", ""))
    return Checkpoint(name=name, files=files, step=snap.checkpoint_step, wall_created=snap.time)
