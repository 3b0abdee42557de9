"""Faults: small parameter classes that inject a disruption and revert it."""

from __future__ import annotations

from chaoskit.faults.base import Changes, Fault, FaultContext, Injection

__all__ = ["Changes", "Fault", "FaultContext", "Injection"]
