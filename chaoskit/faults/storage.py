"""Storage faults: damage files of the model store and checkpoint directory.

Each fault keeps a copy of what it changes in ``<data_dir>/.chaoskit-faults/`` (so the
original survives even a crash of the experiment), journals the path, offsets and the
SHA-256 before and after, and on revert puts the original back *only if the damage is
still there*: when the DR engine has already restored the file, revert leaves it alone.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from chaoskit.atomic import fsync_dir
from chaoskit.errors import FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.faults.targets import resolve_target

QUARANTINE = ".chaoskit-faults"


def sha256_file(path: Path) -> str | None:
    """Hex SHA-256 of a file's content, or None when it does not exist."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def originals_dir(ctx: FaultContext) -> Path:
    """A new directory for the originals a fault keeps to revert (beside the run's data,
    outside every watched store)."""
    place = Path(ctx.stack.data_dir) / QUARANTINE / secrets.token_hex(6)
    place.mkdir(parents=True)
    return place


@dataclass(frozen=True)
class FileDamage(Fault):
    """Base of the faults that rewrite one file in place; subclasses implement ``_damage``."""

    kind: ClassVar[str] = "file-damage"
    target: str = "model:latest/variables/variables.data-00000-of-00001"

    def _damage(self, path: Path, data: bytearray, ctx: FaultContext) -> dict[str, Any]:
        raise NotImplementedError

    def _inject(self, ctx: FaultContext) -> Changes:
        path = resolve_target(ctx.stack, self.target)
        if not path.is_file():
            raise FaultError(f"{self.kind}: {self.target!r} ({path}) is not a file")
        data = bytearray(path.read_bytes())
        before = hashlib.sha256(data).hexdigest()
        details = self._damage(path, data, ctx)  # validates before anything is touched
        if hashlib.sha256(data).hexdigest() == before:
            raise FaultError(f"{self.kind}: {details} would leave {path} unchanged")
        keep = originals_dir(ctx) / path.name
        shutil.copy2(path, keep)
        with open(path, "r+b") as f:  # in place, as a bad disk or a torn upload would
            f.write(data)
            f.truncate(len(data))
            f.flush()
            os.fsync(f.fileno())
        record = {"path": str(path), "sha256_before": before,
                  "sha256_after": sha256_file(path), **details}  # fmt: skip
        return Changes(record=record, undo=keep)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        revert_if_still_damaged(changes)


def revert_if_still_damaged(changes: Changes) -> None:
    """Put the kept original back if the file still holds exactly the damage we made."""
    path = Path(changes.record["path"])
    keep: Path = changes.undo
    if keep.exists() and sha256_file(path) == changes.record["sha256_after"]:
        restore_file(keep, path)
    shutil.rmtree(keep.parent, ignore_errors=True)


def restore_file(source: Path, target: Path) -> None:
    """Copy *source* over *target* atomically (temp beside it, fsync, rename)."""
    tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
    shutil.copy2(source, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)


def _check_range(kind: str, path: Path, offset: int, length: int, size: int) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise FaultError(
            f"{kind}: offset {offset} + length {length} does not fit {path} ({size} bytes)"
        )


@dataclass(frozen=True)
class BitFlip(FileDamage):
    """Flip ``flips`` random bits (or the bit at ``offset``) — a bad disk or a cosmic ray."""

    kind: ClassVar[str] = "bit-flip"
    flips: int = 1
    offset: int | None = None

    def _damage(self, path: Path, data: bytearray, ctx: FaultContext) -> dict[str, Any]:
        if not data:
            raise FaultError(f"bit-flip: {path} is empty")
        if self.offset is not None:
            _check_range(self.kind, path, self.offset, 1, len(data))
        flipped = []
        for _ in range(max(1, self.flips)):
            offset = self.offset if self.offset is not None else ctx.rng.randrange(len(data))
            bit = ctx.rng.randrange(8)
            data[offset] ^= 1 << bit
            flipped.append([offset, bit])
        return {"flipped": flipped}


@dataclass(frozen=True)
class Truncate(FileDamage):
    """Cut the file to ``size`` bytes (random when None) — an interrupted upload."""

    kind: ClassVar[str] = "truncate"
    size: int | None = None

    def _damage(self, path: Path, data: bytearray, ctx: FaultContext) -> dict[str, Any]:
        if not data:
            raise FaultError(f"truncate: {path} is already empty")
        size = ctx.rng.randrange(len(data)) if self.size is None else self.size
        if not 0 <= size < len(data):
            raise FaultError(f"truncate: size {size} does not fit {path} ({len(data)} bytes)")
        before = len(data)
        del data[size:]
        return {"size_before": before, "size_after": size}


@dataclass(frozen=True)
class ZeroRange(FileDamage):
    """Overwrite ``length`` bytes at ``offset`` (random when None) with zeros."""

    kind: ClassVar[str] = "zero-range"
    offset: int | None = None
    length: int = 64

    def _damage(self, path: Path, data: bytearray, ctx: FaultContext) -> dict[str, Any]:
        if self.offset is not None:
            offset, length = self.offset, self.length
            _check_range(self.kind, path, offset, length, len(data))
        else:  # a random range that is not all zeros already: zeroing it must change something
            length = min(self.length, len(data))
            for _ in range(1000):
                offset = ctx.rng.randrange(len(data) - length + 1)
                if any(data[offset : offset + length]):
                    break
            else:
                raise FaultError(f"zero-range: {path} holds no {length} non-zero bytes to zero")
        data[offset : offset + length] = bytes(length)
        return {"offset": offset, "length": length}


@dataclass(frozen=True)
class AppendBytes(FileDamage):
    """Append ``count`` random bytes — TensorFlow does not notice this one (DESIGN.md)."""

    kind: ClassVar[str] = "append-bytes"
    count: int = 16

    def _damage(self, path: Path, data: bytearray, ctx: FaultContext) -> dict[str, Any]:
        if self.count <= 0:
            raise FaultError(f"append-bytes: count must be > 0, got {self.count}")
        data.extend(ctx.rng.randbytes(self.count))
        return {"appended": self.count}


@dataclass(frozen=True)
class DeleteFile(Fault):
    """Delete one file (kept aside); revert puts it back if nothing else has."""

    kind: ClassVar[str] = "delete-file"
    target: str = "model:latest/saved_model.pb"

    def _inject(self, ctx: FaultContext) -> Changes:
        path = resolve_target(ctx.stack, self.target)
        if not path.is_file():
            raise FaultError(f"delete-file: {self.target!r} ({path}) is not a file")
        keep = originals_dir(ctx) / path.name
        before = sha256_file(path)
        os.replace(path, keep)  # the quarantine is inside the data dir: same file system
        fsync_dir(path.parent)
        return Changes(record={"path": str(path), "sha256_before": before}, undo=keep)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        path = Path(changes.record["path"])
        keep: Path = changes.undo
        if keep.exists() and not path.exists() and path.parent.is_dir():
            restore_file(keep, path)
        shutil.rmtree(keep.parent, ignore_errors=True)


@dataclass(frozen=True)
class DeleteVersion(Fault):
    """Delete a whole SavedModel version directory (moved aside, atomically)."""

    kind: ClassVar[str] = "delete-version"
    version: str = "latest"

    def _inject(self, ctx: FaultContext) -> Changes:
        path = resolve_target(ctx.stack, f"model:{self.version}")
        keep = originals_dir(ctx) / path.name
        os.replace(path, keep)
        fsync_dir(path.parent)
        return Changes(record={"path": str(path), "version": int(path.name)}, undo=keep)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        path = Path(changes.record["path"])
        keep: Path = changes.undo
        if keep.exists() and not path.exists():
            os.replace(keep, path)
            fsync_dir(path.parent)
        shutil.rmtree(keep.parent, ignore_errors=True)


@dataclass(frozen=True)
class CheckpointStateFault(Fault):
    """Remove or garble CheckpointManager's ``checkpoint`` state file.

    TensorFlow then quietly finds no checkpoint (``latest_checkpoint`` returns None).
    """

    kind: ClassVar[str] = "checkpoint-state"
    mode: str = "remove"

    def __post_init__(self) -> None:
        if self.mode not in ("remove", "garble"):
            raise FaultError(f"checkpoint-state: mode {self.mode!r} is not remove or garble")

    def _inject(self, ctx: FaultContext) -> Changes:
        path = resolve_target(ctx.stack, "checkpoint:state")
        if not path.is_file():
            raise FaultError(f"checkpoint-state: no state file at {path}")
        keep = originals_dir(ctx) / path.name
        shutil.copy2(path, keep)
        if self.mode == "remove":
            path.unlink()
        else:
            path.write_bytes(ctx.rng.randbytes(48))
        fsync_dir(path.parent)
        return Changes(record={"path": str(path), "mode": self.mode,
                               "sha256_after": sha256_file(path)}, undo=keep)  # fmt: skip

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        revert_if_still_damaged(changes)
