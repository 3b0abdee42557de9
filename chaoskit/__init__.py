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

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ChaosKitError",
    "ConfigError",
    "FaultError",
    "IntegrityError",
    "Journal",
    "JournalError",
    "ProxyError",
    "RepositoryError",
    "StackError",
    "__version__",
    "parse_duration",
    "read_journal",
]
