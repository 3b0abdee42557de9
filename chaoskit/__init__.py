"""chaoskit: chaos and disaster-recovery testing for TensorFlow serving stacks."""

from __future__ import annotations

from chaoskit.durations import parse_duration
from chaoskit.errors import (
    BackendError,
    ChaosKitError,
    ConfigError,
    FaultError,
    IntegrityError,
    JournalError,
    ProxyError,
    RepositoryError,
    StackError,
)
from chaoskit.journal import Journal, read_journal
from chaoskit.objectives import Objectives

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``chaoskit.Experiment`` without importing the DR engine when chaoskit is imported
    (the CLI's backup path must stay cheap)."""
    if name == "Experiment":
        from chaoskit.experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'chaoskit' has no attribute {name!r}")

__all__ = [
    "BackendError",
    "ChaosKitError",
    "ConfigError",
    "FaultError",
    "IntegrityError",
    "Experiment",
    "Journal",
    "JournalError",
    "Objectives",
    "ProxyError",
    "RepositoryError",
    "StackError",
    "__version__",
    "parse_duration",
    "read_journal",
]
