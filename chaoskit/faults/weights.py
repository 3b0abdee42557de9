"""Weight faults: every file stays valid, yet the model is not the one that was exported.

TensorFlow's own checks (CRC32C per tensor and per index block) catch bit rot; they
cannot catch a bundle that was *rewritten* with other values, nor a version directory
rolled back to an older, equally valid version.  Only a comparison with recovery-point
manifests (the store guard) or the canary goldens can.  Like the storage faults, these
keep the originals in ``<data_dir>/.chaoskit-faults/``, journal SHA-256 before and after,
and revert only while the damage is still there.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from chaoskit.atomic import exchange_paths, fsync_dir
from chaoskit.errors import FaultError, IntegrityError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.faults.reweight import ReweightError, rewrite
from chaoskit.faults.storage import originals_dir, restore_file, sha256_file
from chaoskit.faults.targets import resolve_target
from chaoskit.model import version_dirs
from chaoskit.tfbundle import TensorEntry, read_bundle_index

FLOAT_DTYPES = {1: "float32", 2: "float64", 19: "float16"}
"""TensorFlow DataType enum values of the float tensors a weight fault may change."""


def _bundle_prefix(stack: Any, target: str) -> Path:
    """The tensor bundle prefix *target* names: a model version's variables or a checkpoint."""
    if target.startswith("model:") and "/" not in target:
        return resolve_target(stack, target) / "variables" / "variables"
    if target == "checkpoint:latest":
        index = resolve_target(stack, "checkpoint:latest.index")
        return index.with_name(index.name[: -len(".index")])
    raise FaultError(
        f"silent-weight-change: target {target!r} is not a bundle "
        "(use model:latest, model:<version> or checkpoint:latest)"
    )


def bundle_files(prefix: Path, kind: str = "silent-weight-change"
                 ) -> tuple[Path, Path, list[TensorEntry]]:  # fmt: skip
    """(.index, the one .data shard, tensor entries); FaultError when not a valid bundle."""
    index = prefix.with_name(prefix.name + ".index")
    try:
        bundle = read_bundle_index(index)
    except (OSError, IntegrityError) as e:
        raise FaultError(f"{kind}: {index} is not a readable bundle index: {e}") from e
    if bundle.num_shards != 1:
        raise FaultError(f"{kind}: {prefix} has {bundle.num_shards} data shards (1 supported)")
    data = prefix.with_name(prefix.name + ".data-00000-of-00001")
    if not data.is_file():
        raise FaultError(f"{kind}: the data shard {data} is missing")
    return index, data, list(bundle.entries)


def _nonzero(data: Path, entry: TensorEntry) -> bool:
    with open(data, "rb") as f:
        f.seek(entry.offset)
        return any(f.read(entry.size))


def nonzero_floats(kind: str, data: Path, entries: list[TensorEntry]) -> list[TensorEntry]:
    """The float tensors of a bundle that scaling changes (not all zeros), by name."""
    found = [e for e in sorted(entries, key=lambda e: e.name)
             if e.dtype in FLOAT_DTYPES and e.size > 0 and _nonzero(data, e)]  # fmt: skip
    if not found:
        raise FaultError(f"{kind}: no non-zero float tensor in {data.parent}")
    return found


def named_tensor(kind: str, name: str, data: Path, entries: list[TensorEntry]) -> TensorEntry:
    """Tensor *name* of a bundle, refused unless scaling it changes it."""
    floats = sorted((e for e in entries if e.dtype in FLOAT_DTYPES and e.size > 0),
                    key=lambda e: e.name)  # fmt: skip
    by_name = {e.name: e for e in entries}
    if name not in by_name:
        known = ", ".join(e.name for e in floats[:8]) + (", ..." if len(floats) > 8 else "")
        raise FaultError(f"{kind}: no tensor {name!r} in {data.parent} (float tensors: "
                         f"{known})")  # fmt: skip
    chosen = by_name[name]
    if chosen not in floats:
        raise FaultError(f"{kind}: tensor {name!r} is not a float tensor (dtype enum "
                         f"{chosen.dtype})")  # fmt: skip
    if not _nonzero(data, chosen):
        raise FaultError(f"{kind}: tensor {name!r} is all zeros; scaling would not change it")
    return chosen


@dataclass(frozen=True)
class SilentWeightChange(Fault):
    """Scale one float tensor of a variables bundle and re-save it as a *valid* bundle.

    TensorFlow loads the result without any error (its CRC32Cs are recomputed) and
    predicts differently.  The rewrite is :func:`chaoskit.faults.reweight.rewrite` (pure
    Python, no TensorFlow: see there why).  The tensor is ``tensor`` or, when None,
    one drawn by ``ctx.rng`` among the float tensors that are not all zeros.  Undo: the
    original ``.index`` and ``.data`` are kept aside and put back, each only if still
    changed.
    """

    kind: ClassVar[str] = "silent-weight-change"
    target: str = "model:latest"
    tensor: str | None = None
    scale: float = 1.5

    def __post_init__(self) -> None:
        if not math.isfinite(self.scale) or self.scale == 1.0:
            raise FaultError(f"silent-weight-change: scale must be finite and not 1, "
                             f"got {self.scale!r}")  # fmt: skip

    def _choose(self, ctx: FaultContext, data: Path, entries: list[TensorEntry]) -> TensorEntry:
        if self.tensor is not None:
            return named_tensor(self.kind, self.tensor, data, entries)
        return ctx.rng.choice(nonzero_floats(self.kind, data, entries))

    def _inject(self, ctx: FaultContext) -> Changes:
        prefix = _bundle_prefix(ctx.stack, self.target)
        index, data, entries = bundle_files(prefix)
        entry = self._choose(ctx, data, entries)  # validates before anything is touched
        place = originals_dir(ctx)
        keep = {"index": place / "orig" / index.name, "data": place / "orig" / data.name}
        keep["index"].parent.mkdir()
        try:
            shutil.copy2(index, keep["index"])
            shutil.copy2(data, keep["data"])
            out = place / "new" / prefix.name
            details = rewrite(place / "orig" / prefix.name, out, entry.name, self.scale)
        except ReweightError as e:
            shutil.rmtree(place, ignore_errors=True)
            raise FaultError(f"silent-weight-change: {prefix}: {e}") from e
        except BaseException:
            shutil.rmtree(place, ignore_errors=True)
            raise
        new = {"index": out.with_name(out.name + ".index"),
               "data": out.with_name(out.name + ".data-00000-of-00001")}  # fmt: skip
        live = {"index": index, "data": data}
        files = {what: {"path": str(live[what]), "sha256_before": sha256_file(keep[what]),
                        "sha256_after": sha256_file(new[what])} for what in live}  # fmt: skip
        # data first: until the index follows, a load fails loudly (CRC), never silently
        for what in ("data", "index"):
            os.replace(new[what], live[what])
        fsync_dir(prefix.parent)
        record = {"path": str(prefix), **details, "shape": list(entry.shape), "files": files}
        return Changes(record=record, undo=keep)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        keep: dict[str, Path] = changes.undo
        for what in ("data", "index"):
            info = changes.record["files"][what]
            path = Path(info["path"])
            if keep[what].exists() and sha256_file(path) == info["sha256_after"]:
                restore_file(keep[what], path)
        shutil.rmtree(keep["index"].parent.parent, ignore_errors=True)


def tree_manifest(root: Path) -> dict[str, str | None]:
    """SHA-256 of every file under *root*, by relative path."""
    return {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _swap(a: Path, b: Path) -> None:
    """Exchange two directories atomically (renameat2); two renames where unsupported."""
    if exchange_paths(a, b):
        fsync_dir(a.parent)
        fsync_dir(b.parent)
        return
    parked = a.with_name(a.name + ".swap")
    os.rename(a, parked)
    os.rename(b, a)
    os.rename(parked, b)
    fsync_dir(a.parent)
    fsync_dir(b.parent)


@dataclass(frozen=True)
class StaleModel(Fault):
    """The store rolled back: the latest version directory holds an older version's files.

    Every file is valid, its canary included (it is the older version's), so the version
    loads and answers "correctly" for the wrong model.  ``source`` is ``"previous"`` (the
    next older version) or a version number.  The swap is one atomic directory exchange;
    undo exchanges back, only if the directory still holds exactly the stale files.
    """

    kind: ClassVar[str] = "stale-model"
    target: str = "model:latest"
    source: str = "previous"

    def __post_init__(self) -> None:
        if self.source != "previous" and not self.source.isdigit():
            raise FaultError(f"stale-model: source {self.source!r} is not 'previous' "
                             "or a version number")  # fmt: skip

    def versions_needed(self) -> int:
        return 2 if self.source == "previous" else 1

    def _inject(self, ctx: FaultContext) -> Changes:
        path = resolve_target(ctx.stack, self.target)
        versions = version_dirs(ctx.stack.model_base_path)
        if not path.name.isdigit() or versions.get(int(path.name)) is None:
            raise FaultError(f"stale-model: {self.target!r} ({path}) is not a model version")
        version = int(path.name)
        older = [v for v in versions if v < version]
        if self.source == "previous":
            if not older:
                raise FaultError(f"stale-model: version {version} has no previous version")
            source = max(older)
        else:
            source = int(self.source)
            if source not in versions or source == version:
                raise FaultError(f"stale-model: no other version {self.source!r} in "
                                 f"{ctx.stack.model_base_path}")  # fmt: skip
        place = originals_dir(ctx)
        staged = place / path.name
        try:
            shutil.copytree(versions[source], staged, symlinks=True)
            before, after = tree_manifest(path), tree_manifest(staged)
            _swap(staged, path)  # staged now holds the original version
        except BaseException:
            shutil.rmtree(place, ignore_errors=True)
            raise
        record = {"path": str(path), "version": version, "source_version": source,
                  "sha256_before": before, "sha256_after": after}  # fmt: skip
        return Changes(record=record, undo=staged)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        path = Path(changes.record["path"])
        keep: Path = changes.undo
        unchanged = path.is_dir() and tree_manifest(path) == changes.record["sha256_after"]
        if keep.is_dir() and unchanged:
            _swap(keep, path)
        shutil.rmtree(keep.parent, ignore_errors=True)
