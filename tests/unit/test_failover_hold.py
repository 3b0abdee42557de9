"""Failback waits for healthy probes, and for any detector still holding the replica."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from chaoskit.dr.online.failover import FailoverThenRepair
from chaoskit.journal import Journal, read_journal


class FakeGateway:
    """Stands in for the gateway (outside the logic under test)."""

    def __init__(self) -> None:
        self.primary, self.routed, self.replicas = "serving", "serving-b", ["serving", "serving-b"]
        self.out = {"serving"}  # out of rotation, as after a failover away from serving

    def take_out(self, replica: str) -> None:
        self.out.add(replica)

    def put_back(self, replica: str) -> None:
        self.out.discard(replica)

    def route_to(self, replica: str) -> bool:
        moved, self.routed = replica != self.routed, replica
        return moved


def failover(tmp_path: Path) -> FailoverThenRepair:
    stack = SimpleNamespace(gateway=FakeGateway())
    action = FailoverThenRepair(stack, None, Journal(tmp_path / "j.jsonl"), None, heal_after=3)  # type: ignore[arg-type]
    action._failed.add("serving")  # as after a failover away from serving
    return action


def test_fails_back_after_heal_after_healthy_probes(tmp_path: Path) -> None:
    action = failover(tmp_path)
    for _ in range(2):
        action.observe("serving", True)
    assert action.gateway.routed == "serving-b"
    assert action.gateway.out == {"serving"}, "back in rotation before it healed"
    action.observe("serving", True)
    assert action.gateway.routed == "serving"
    assert action.gateway.out == set()
    events = read_journal(tmp_path / "j.jsonl")
    assert [(e["event"], e["service"]) for e in events] == [
        ("healed", "serving"), ("failback", "serving")
    ]


def test_a_held_replica_is_not_failed_back_until_released(tmp_path: Path) -> None:
    action = failover(tmp_path)
    action.hold("serving")
    for _ in range(10):
        action.observe("serving", True)
    assert action.gateway.routed == "serving-b", "failed back while another detector held it"
    action.release("serving")
    for _ in range(3):
        action.observe("serving", True)
    assert action.gateway.routed == "serving"


def test_a_standby_repaired_behind_a_failover_says_it_healed(tmp_path: Path) -> None:
    """No failback for a standby: ``healed`` is the only event that confirms it is back."""
    action = failover(tmp_path)
    action._failed = {"serving-b"}
    action.gateway.routed = "serving"
    for _ in range(3):
        action.observe("serving-b", True)
    events = read_journal(tmp_path / "j.jsonl")
    assert [(e["event"], e["service"]) for e in events] == [("healed", "serving-b")]
    assert action.gateway.routed == "serving"
