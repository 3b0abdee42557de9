"""The DR engine, in three subsystems: :mod:`.online` (probes, detectors, recovery),
:mod:`.learned` (learned detectors) and :mod:`.protect` (store guard, backup repository,
DR site).  This package re-exports the backup repository's public API."""

from __future__ import annotations

from chaoskit.dr.protect.repository.agent import BackupAgent
from chaoskit.dr.protect.repository.check import CheckReport, Problem
from chaoskit.dr.protect.repository.prune import ForgetResult, PruneStats
from chaoskit.dr.protect.repository.repo import (
    FORMAT_VERSION,
    Repository,
    init_repository,
    open_repository,
)
from chaoskit.dr.protect.repository.restore import RestoreResult
from chaoskit.dr.protect.repository.retention import RetentionPolicy, apply_policy
from chaoskit.dr.protect.repository.snapshots import FileEntry, Snapshot
from chaoskit.dr.protect.repository.verify import VerifyReport
from chaoskit.tfbundle import BundleIndex, TensorEntry, read_bundle_index

__all__ = [
    "FORMAT_VERSION",
    "BackupAgent",
    "BundleIndex",
    "CheckReport",
    "FileEntry",
    "ForgetResult",
    "Problem",
    "PruneStats",
    "Repository",
    "RestoreResult",
    "RetentionPolicy",
    "Snapshot",
    "TensorEntry",
    "VerifyReport",
    "apply_policy",
    "init_repository",
    "open_repository",
    "read_bundle_index",
]
