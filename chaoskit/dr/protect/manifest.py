"""Producer manifests: what a producer wrote, so damage before the first backup is seen.

A recovery point only proves that what is live now matches what was backed up; content
damaged *between* the producer's write and that first backup would become the recovery
point itself (the fault laundered).  So chaoskit's trainer writes, with everything it
produces, a manifest of the SHA-256 (and size) of every file:

- a model version: ``<version>/assets.extra/chaoskit_manifest.json``, written into the
  temporary export directory before the atomic rename (TensorFlow ignores
  ``assets.extra``); it covers every file of the version, the canary goldens included,
  and names the version, so an older version's files copied over a newer one (a stale
  model, whose own manifest is intact) do not pass;
- a ``tf`` checkpoint: ``<prefix>.manifest.json`` beside its bundle, written atomically
  just after ``CheckpointManager.save`` (TF's per-tensor CRCs do not catch a value
  rewritten with a fresh CRC).  TF's sweep does not delete it: the trainer deletes the
  manifests of checkpoints its manager no longer lists (:func:`remove_unlisted`); one
  left behind is harmless (no format counts ``*.manifest.json`` as a checkpoint).

The store guard checks new content against its manifest before it becomes a recovery
point (rule ``producer-manifest``); content without one (a user's trainer) is trusted at
first sight (rule ``first-sight``: a version must load and answer its canary alike twice,
see :mod:`chaoskit.dr.online.recorded_goldens`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit.atomic import atomic_write_text
from chaoskit.dr.protect.repository.verify import file_sha256 as sha256_file
from chaoskit.errors import IntegrityError

FORMAT = "chaoskit-manifest/1"
VERSION_MANIFEST = "assets.extra/chaoskit_manifest.json"
CHECKPOINT_SUFFIX = ".manifest.json"
RULE_MANIFEST = "producer-manifest"
RULE_FIRST_SIGHT = "first-sight"
KINDS = ("model-version", "checkpoint")


class ManifestError(IntegrityError):
    """A manifest that cannot be read or is not a chaoskit manifest (names the file)."""


@dataclass(frozen=True)
class Manifest:
    """What one producer wrote: the unit (kind, name), its step, and every file's digest."""

    kind: str
    name: str
    step: int | None
    files: dict[str, tuple[str, int]]  # relative path -> (sha256, size)
    path: Path | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether new content may become a recovery point, and by which rule."""

    rule: str
    manifest: Path | None = None
    problems: tuple[str, ...] = ()
    parsed: Manifest | None = None
    """The manifest as read when the content was checked (what the backup must match)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def version_manifest_path(version_dir: str | os.PathLike[str]) -> Path:
    return Path(version_dir) / VERSION_MANIFEST


def checkpoint_manifest_path(directory: str | os.PathLike[str], prefix: str) -> Path:
    return Path(directory) / f"{prefix}{CHECKPOINT_SUFFIX}"


def is_manifest(rel: str) -> bool:
    """True for a manifest's relative path (what no checkpoint format may count)."""
    return rel == VERSION_MANIFEST or rel.endswith(CHECKPOINT_SUFFIX)


def _files_under(root: Path) -> list[str]:
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def build(root: Path, files: Iterable[str], *, kind: str, name: str, step: int | None,
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The manifest document of *files* (relative to *root*), hashed now."""
    if kind not in KINDS:
        raise ValueError(f"manifest kind {kind!r} is not one of {', '.join(KINDS)}")
    digests = {}
    for rel in sorted(files):
        path = root / rel
        digests[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"format": FORMAT, "kind": kind, "name": name, "step": step, **extra,
            "files": digests}  # fmt: skip


def write_version_manifest(version_dir: Path, version: int, step: int, **extra: Any) -> Path:
    """Write the manifest of every file now in *version_dir* (call it last, before the
    rename that publishes the version)."""
    files = [rel for rel in _files_under(version_dir) if rel != VERSION_MANIFEST]
    doc = build(version_dir, files, kind="model-version", name=str(int(version)), step=step,
                **extra)  # fmt: skip
    path = version_manifest_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1), durable=False)
    return path


def write_checkpoint_manifest(
    directory: Path, prefix: str, files: Iterable[str], step: int | None, **extra: Any
) -> Path:
    """Write (atomically, durably) the manifest of one checkpoint's *files*."""
    doc = build(directory, files, kind="checkpoint", name=prefix, step=step, **extra)
    path = checkpoint_manifest_path(directory, prefix)
    atomic_write_text(path, json.dumps(doc, indent=1))
    return path


def remove_unlisted(directory: Path, listed: Iterable[str]) -> list[str]:
    """Delete the checkpoint manifests of prefixes not in *listed* (after a sweep)."""
    keep = {f"{Path(p).name}{CHECKPOINT_SUFFIX}" for p in listed}
    removed = []
    for path in directory.glob(f"*{CHECKPOINT_SUFFIX}"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def read_manifest(path: Path) -> Manifest:
    """The manifest at *path*; ManifestError (naming it) when unreadable or malformed."""
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        files = {
            str(rel): (str(entry["sha256"]), int(entry["size"]))
            for rel, entry in doc["files"].items()
        }
        step = doc.get("step")
        return Manifest(str(doc["kind"]), str(doc["name"]), None if step is None else int(step),
                        files, path)  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ManifestError(f"producer manifest {path} is unreadable: {e}") from e


def compare(
    manifest: Manifest,
    kind: str,
    name: str,
    actual: Mapping[str, tuple[str, int] | None],
    *,
    extras: bool = True,
) -> list[str]:
    """What differs between *actual* (path -> (sha256, size), None when missing) and
    the manifest of unit *name*; with *extras*, files the producer did not write too."""
    where = manifest.path or "the producer's manifest"
    if (manifest.kind, manifest.name) != (kind, name):
        problems = [f"manifest  {where} is of {manifest.kind} {manifest.name}, not {kind} {name}"]
    else:
        problems = []
    for rel, (sha, size) in sorted(manifest.files.items()):
        got = actual.get(rel)
        if got is None:
            problems.append(f"missing  {rel} (listed in {where})")
        elif got[1] != size:
            problems.append(f"changed  {rel} (size {got[1]} != {size} in {where})")
        elif got[0] != sha:
            problems.append(f"changed  {rel} (SHA-256 differs from {where})")
    if extras:
        problems += [
            f"extra    {rel} (not in {where})"
            for rel in sorted(set(actual) - set(manifest.files))
            if actual[rel] is not None and not is_manifest(rel)
        ]
    return problems


def hash_live(root: Path, files: Iterable[str]) -> dict[str, tuple[str, int] | None]:
    """(sha256, size) of each live file (None when it is missing)."""
    found: dict[str, tuple[str, int] | None] = {}
    for rel in files:
        path = root / rel
        try:
            found[rel] = (sha256_file(path), path.stat().st_size)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            found[rel] = None
    return found


def snapshot_digests(files: Iterable[Any]) -> dict[str, tuple[str, int] | None]:
    """(sha256, size) of each file of a snapshot (its ``FileEntry`` list), as backed up."""
    return {f.path: (f.sha256, f.size) for f in files if f.type == "file"}


def vet_version(version_dir: Path, version: int, *, require: bool = False) -> Verdict:
    """Check a new model version against its manifest, or trust it at first sight.

    *require* (the producer has written manifests before): a version without one is
    not the producer's (its manifest is written before the rename, so never late)."""
    path = version_manifest_path(version_dir)
    if not path.exists():
        if require:
            return Verdict(RULE_MANIFEST, path, (f"missing  {VERSION_MANIFEST} (the producer "
                                                 "writes one into every version)",))  # fmt: skip
        return Verdict(RULE_FIRST_SIGHT)
    try:
        manifest = read_manifest(path)
    except ManifestError as e:
        return Verdict(RULE_MANIFEST, path, (str(e),))
    live = hash_live(version_dir, _files_under(version_dir))
    problems = compare(manifest, "model-version", str(version), live)
    return Verdict(RULE_MANIFEST, path, tuple(problems), manifest)


def vet_checkpoint(directory: Path, prefix: str, files: Iterable[str]) -> Verdict | None:
    """Check a checkpoint's files against its manifest; None when it has none (yet)."""
    path = checkpoint_manifest_path(directory, prefix)
    if not path.exists():
        return None
    try:
        manifest = read_manifest(path)
    except ManifestError as e:
        return Verdict(RULE_MANIFEST, path, (str(e),))
    problems = compare(manifest, "checkpoint", prefix, hash_live(directory, files), extras=False)
    return Verdict(RULE_MANIFEST, path, tuple(problems), manifest)


def vet_backed_up(verdict: Verdict, kind: str, name: str, files: Iterable[Any]) -> Verdict:
    """Check what a backup actually read (its snapshot's digests) against the manifest
    *verdict* was given by: closes the window between the check and the backup."""
    if verdict.parsed is None:
        return verdict
    digests = snapshot_digests(files)
    problems = compare(verdict.parsed, kind, name, digests, extras=kind == "model-version")
    return Verdict(RULE_MANIFEST, verdict.manifest, tuple(problems), verdict.parsed)
