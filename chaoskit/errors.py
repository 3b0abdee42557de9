"""The one error hierarchy of chaoskit.

Every error a user can cause derives from ``ChaosKitError`` and also from the builtin
that fits, so callers may catch either.  Messages name the bad value; third-party
errors are translated where chaoskit calls the third party (``raise ... from e``).
"""

from __future__ import annotations


class ChaosKitError(Exception):
    """Root of every chaoskit error."""


class ConfigError(ChaosKitError, ValueError):
    """A setting, option or argument has a value chaoskit cannot use."""


class StackError(ChaosKitError, RuntimeError):
    """A service of the stack could not be started, reached or stopped."""


class BackendError(StackError):
    """The backend (processes, Docker engine) refused or failed an operation."""


class FaultError(ChaosKitError, RuntimeError):
    """A fault could not be injected or reverted."""


class JournalError(ChaosKitError, ValueError):
    """A journal is missing or unreadable."""


class RepositoryError(ChaosKitError, RuntimeError):
    """The backup repository refused or failed an operation."""


class PermissionDeniedError(RepositoryError):
    """The repository key's role does not allow the operation; nothing was done."""


class IntegrityError(RepositoryError):
    """Stored data failed authentication or a checksum: it was not used."""


class ProxyError(ChaosKitError, RuntimeError):
    """The network proxy refused or failed an operation."""


class ReplicationError(RepositoryError):
    """The DR site could not be reached, or refused a repository file."""
