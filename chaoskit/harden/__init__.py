"""``chaoskit harden-check``: hardening findings for a stack (pure checks over facts)."""

from __future__ import annotations

from chaoskit.harden.core import (
    CHECKS,
    ContainerFacts,
    Facts,
    Finding,
    KeyFacts,
    Mount,
    SecretFile,
    SiteFacts,
    run_checks,
)

__all__ = [
    "CHECKS",
    "ContainerFacts",
    "Facts",
    "Finding",
    "KeyFacts",
    "Mount",
    "SecretFile",
    "SiteFacts",
    "run_checks",
]
