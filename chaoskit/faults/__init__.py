"""Faults: small parameter classes that inject a disruption and revert it.

Families: service (kill, hang), container (Docker stop/restart/remove, network or firewall
partition), storage (damaged files of the model store and checkpoints), network
(Toxiproxy toxics), resources (a full disk, a starved CPU, memory pressure ending in the
OOM killer), security (ransomware on the primary), training (poisoned labels, a
diverging learning rate).
"""

from __future__ import annotations

from chaoskit.faults.base import Changes, Fault, FaultContext, Injection
from chaoskit.faults.container import (
    FirewallPartition,
    NetworkPartition,
    RemoveContainer,
    RestartContainer,
    StopService,
)
from chaoskit.faults.network import Bandwidth, Latency, LimitData, Partition, ResetPeer, Slicer
from chaoskit.faults.node import DrainNode, NodeLoss
from chaoskit.faults.ransomware import Ransomware
from chaoskit.faults.resources import CpuStarvation, DiskFull, MemoryPressure
from chaoskit.faults.rollout import BadRollout
from chaoskit.faults.scale import ScaleService
from chaoskit.faults.service import HangService, KillService
from chaoskit.faults.storage import (
    AppendBytes,
    BitFlip,
    CheckpointStateFault,
    DeleteFile,
    DeleteVersion,
    Truncate,
    ZeroRange,
)
from chaoskit.faults.training import (
    DivergeTraining,
    PoisonTraining,
    SkewPreprocessing,
    SlowModel,
)
from chaoskit.faults.weights import SilentWeightChange, StaleModel

__all__ = [
    "AppendBytes",
    "BadRollout",
    "Bandwidth",
    "BitFlip",
    "Changes",
    "CheckpointStateFault",
    "CpuStarvation",
    "DeleteFile",
    "DeleteVersion",
    "DiskFull",
    "DivergeTraining",
    "DrainNode",
    "Fault",
    "FaultContext",
    "FirewallPartition",
    "HangService",
    "Injection",
    "KillService",
    "Latency",
    "LimitData",
    "MemoryPressure",
    "NetworkPartition",
    "NodeLoss",
    "Partition",
    "PoisonTraining",
    "Ransomware",
    "RemoveContainer",
    "ResetPeer",
    "RestartContainer",
    "ScaleService",
    "SilentWeightChange",
    "SkewPreprocessing",
    "Slicer",
    "SlowModel",
    "StaleModel",
    "StopService",
    "Truncate",
    "ZeroRange",
]
