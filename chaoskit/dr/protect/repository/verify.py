"""Compare a live directory with a snapshot: which files are missing, changed or extra.

This is how a DR drill proves that what is serving is what was backed up; a damaged
checkpoint on the serving host shows up as a changed file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import FileEntry, Snapshot
from chaoskit.errors import ConfigError


@dataclass
class VerifyReport:
    snapshot: Snapshot
    source: Path
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)  # path -> what differs
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.extra)

    def lines(self) -> list[str]:
        out = [f"missing  {p}" for p in self.missing]
        out += [f"changed  {p} ({why})" for p, why in sorted(self.changed.items())]
        out += [f"extra    {p}" for p in self.extra]
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def _compare(base: Path, entry: FileEntry) -> str | None:
    """None when the live file matches *entry*, else what differs ('missing' if gone)."""
    path = base / entry.path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    if not path.is_file():
        return "not a regular file"
    if st.st_size != entry.size:
        return f"size {st.st_size} != {entry.size}"
    if file_sha256(path) != entry.sha256:
        return "content differs (SHA-256)"
    return None


def live_files(base: Path) -> set[str]:
    found = set()
    for dirpath, _, filenames in os.walk(base):
        for name in filenames:
            found.add((Path(dirpath) / name).relative_to(base).as_posix())
    return found


def verify_directory(repo: Repository, source: Path, ref: str) -> VerifyReport:
    if not source.is_dir():
        raise ConfigError(f"verify: {source} is not a directory")
    return verify_snapshot(repo.snapshot(ref), source)


def verify_snapshot(snap: Snapshot, source: Path) -> VerifyReport:
    """Compare *source* with a snapshot already in memory (the store guard keeps its
    recovery points' manifests: it scans every 250 ms, also while the repository itself
    is damaged)."""
    report = VerifyReport(snapshot=snap, source=source)
    entries = [f for f in snap.files if f.type == "file"]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda e: _compare(source, e), entries))
    for entry, problem in zip(entries, results, strict=True):
        if problem is None:
            report.matched += 1
        elif problem == "missing":
            report.missing.append(entry.path)
        else:
            report.changed[entry.path] = problem
    report.extra = sorted(live_files(source) - {e.path for e in entries})
    return report
