"""A worse model ships: a new, valid version whose weights compute worse answers.

The commonest ML incident, for any trainer: a run that learned the wrong thing exports
a version that loads, answers every request, and is wrong more often.  This fault needs
nothing from the trainer (chaoskit's trainer has :mod:`chaoskit.faults.training` for
the causes themselves): it publishes, as the next version number, a copy of the newest
version with one float variable scaled (the largest unless named: the one most of the
model's computation goes through; every copy the bundle stores of it), rewritten as a valid bundle
(:func:`chaoskit.faults.reweight.rewrite`) in a hidden directory of the store and renamed
to its number, whole, as an exporter must.  Only a quality gate that scores versions
on labelled data can refuse it.

A version whose producer keeps a canary of its outputs in it (chaoskit's trainer) is
refused: the copied canary would claim the old outputs for new weights.  The revert
removes the version if it is still in the store, unchanged (a gate may have set it
aside already).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from chaoskit.atomic import fsync_dir
from chaoskit.errors import FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.faults.reweight import ReweightError, rewrite
from chaoskit.faults.weights import bundle_files, named_tensor, nonzero_floats, tree_manifest
from chaoskit.model import canary_file, version_dirs
from chaoskit.tfbundle import TensorEntry

BUNDLE = Path("variables") / "variables"


def _copies(data: Path, chosen: TensorEntry, entries: list[TensorEntry]) -> list[str]:
    """*chosen* and every tensor stored with the same bytes: the same variable saved
    under two names (Keras' ``model.export()`` writes each one twice, and loading reads
    either), all of which must change."""
    def raw(entry: TensorEntry) -> bytes:
        with open(data, "rb") as f:
            f.seek(entry.offset)
            return f.read(entry.size)

    wanted = raw(chosen)
    return [chosen.name] + sorted(
        e.name for e in entries
        if e.name != chosen.name and e.dtype == chosen.dtype and e.size == chosen.size
        and raw(e) == wanted
    )


def scaled_copy(source: Path, staged: Path, kind: str, scale: float,
                tensor: str | None = None) -> dict[str, Any]:
    """Copy the version directory *source* to *staged* with *tensor* (default: the largest
    float tensor), and every copy the bundle stores of it, times *scale*; returns what
    the journal records of it (FaultError naming *source* if its bundle cannot be)."""
    _, data, entries = bundle_files(source / BUNDLE, kind)
    chosen = (named_tensor(kind, tensor, data, entries) if tensor else
              max(nonzero_floats(kind, data, entries), key=lambda e: e.size))  # fmt: skip
    copies = _copies(data, chosen, entries)
    shutil.copytree(source, staged, symlinks=True)
    out = staged / "variables" / ".rewritten"
    try:
        for name in copies:  # one at a time, each on the last one's result
            details = rewrite(staged / BUNDLE, out, name, float(scale))
            for suffix in (".index", ".data-00000-of-00001"):
                Path(f"{out}{suffix}").replace(Path(f"{staged / BUNDLE}{suffix}"))
    except ReweightError as e:
        raise FaultError(f"{kind}: version {source.name}: {e}") from e
    return {**details, "tensor": chosen.name, "copies": copies, "shape": list(chosen.shape),
            "sha256": tree_manifest(staged)}  # fmt: skip


@dataclass(frozen=True)
class WorseVersion(Fault):
    """Publish version newest + 1: the newest with *tensor* (default: the largest float
    tensor) times *scale*."""

    kind: ClassVar[str] = "worse-version"
    scale: float = -1.0
    tensor: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) \
                or not math.isfinite(self.scale) or self.scale == 1.0:
            raise FaultError(f"{self.kind}: scale must be a finite number other than 1, "
                             f"got {self.scale!r}")  # fmt: skip

    def _inject(self, ctx: FaultContext) -> Changes:
        base = Path(ctx.stack.model_base_path)
        versions = version_dirs(base)
        if not versions:
            raise FaultError(f"{self.kind}: the model store {base} has no version to copy")
        source = max(versions)
        if canary_file(versions[source]).exists():
            raise FaultError(
                f"{self.kind}: version {source} keeps a canary of its own outputs (chaoskit's "
                "trainer); a copy with other weights would carry a false one: use "
                "PoisonTraining or DivergeTraining on that trainer instead"
            )
        version = source + 1
        final = base / str(version)
        staged = base / f".chaoskit-worse-{version}"  # hidden: servers poll numbers only
        try:
            scaled = scaled_copy(versions[source], staged, self.kind, self.scale, self.tensor)
            if final.exists():
                raise FaultError(f"{self.kind}: version {version} appeared meanwhile in {base}")
            os.rename(staged, final)  # whole, at once, as an exporter must
            fsync_dir(base)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        record = {"version": version, "source_version": source, "path": str(final), **scaled}
        return Changes(record=record, undo=final)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        final: Path = changes.undo
        if final.is_dir() and tree_manifest(final) == changes.record["sha256"]:
            shutil.rmtree(final, ignore_errors=True)
            fsync_dir(final.parent)
