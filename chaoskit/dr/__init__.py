"""The DR engine: recovery points (backup repository, backup agent) and recovery."""

from __future__ import annotations

from chaoskit.dr.repository.agent import BackupAgent
from chaoskit.dr.repository.check import CheckReport, Problem
from chaoskit.dr.repository.prune import ForgetResult, PruneStats
from chaoskit.dr.repository.repo import (
    FORMAT_VERSION,
    Repository,
    init_repository,
    open_repository,
)
from chaoskit.dr.repository.restore import RestoreResult
from chaoskit.dr.repository.retention import RetentionPolicy, apply_policy
from chaoskit.dr.repository.snapshots import FileEntry, Snapshot
from chaoskit.dr.repository.verify import VerifyReport
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
