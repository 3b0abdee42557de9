"""RTO benchmark, Docker columns: killed and paused serving containers under the DR engine,
against the container cold start and against Docker's own restart policy.

Targets (issue 5): RTO(kill) median <= container cold start + TTD + 0.5 s; the paused
container recovered (a restart policy never recovers it: the container is "running").

    .venv/bin/python bench/rto_docker.py [--runs 3] [--policy-timeout 20]

``bench/rto.py`` may ``import rto_docker`` (same directory) and call :func:`measure`,
which returns the medians as a dict, then :func:`print_table`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chaoskit.dr.online.engine import DRConfig
from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.steady_state import check_steady_state
from chaoskit.experiment import Experiment
from chaoskit.faults.service import HangService, KillService
from chaoskit.journal import Journal
from chaoskit.objectives import Objectives
from chaoskit.serving.client import ServingClient
from chaoskit.stack.docker import DockerBackend
from chaoskit.stack.reference import SERVING, ReferenceStack, StackConfig
from chaoskit.stack.service import ServiceSpec
from chaoskit.waiting import wait_until


def serving_spec(stack: ReferenceStack, name: str = SERVING) -> ServiceSpec:
    """A reference serving spec, listening on ``{bind_host}`` (until reference.py does)."""
    spec = stack.specs[name]
    if "--host" in spec.command:
        return spec
    return dataclasses.replace(spec, command=(*spec.command, "--host", "{bind_host}"))


def canary_ok(client: ServingClient, goldens: Goldens) -> bool:
    return check_steady_state(client, goldens, timeout=1.0).ok


def cold_start(stack: ReferenceStack, goldens: Goldens) -> float:
    """Seconds from starting a stopped serving container to its first correct prediction."""
    stack.backend.stop(SERVING)
    client = stack.direct_client(SERVING, timeout=2.0)
    start = time.monotonic()
    stack.backend.restart(SERVING)
    wait_until(lambda: canary_ok(client, goldens), 90, interval=0.01, what="canary")
    return time.monotonic() - start


def policy_recovery(
    root: Path, stack: ReferenceStack, goldens: Goldens, policy: str, fault: str, timeout: float
) -> float | None:
    """Seconds until Docker's restart *policy* alone brings serving back after *fault*
    (kill: SIGKILL to the container's init, an unexpected exit; pause), or None."""
    backend = DockerBackend(root / f"run-{policy}-{fault}", stack.data_dir, restart_policy=policy)
    try:
        backend.start(serving_spec(stack))
        host, port = backend.endpoint(SERVING, "rest")
        client = ServingClient(host, port, stack.config.model_name, timeout=1.0)
        wait_until(lambda: canary_ok(client, goldens), 90, interval=0.01, what="canary")
        start = time.monotonic()
        backend.kill(SERVING) if fault == "kill" else backend.pause(SERVING)
        wait_until(lambda: not canary_ok(client, goldens), 5, interval=0.01, what="outage")
        try:
            wait_until(lambda: canary_ok(client, goldens), timeout, interval=0.02, what="policy")
        except TimeoutError:
            return None
        return time.monotonic() - start
    finally:
        backend.close()


def measure(runs: int = 3, policy_timeout: float = 20.0) -> dict[str, Any]:
    """Medians of cold start, TTD and RTO (kill, pause) and the restart-policy baselines."""
    config = DRConfig()
    samples: dict[str, list[float]] = {k: [] for k in ("cold", "ttd_kill", "rto_kill",
                                                       "ttd_hang", "rto_hang")}  # fmt: skip
    hang_recovered = 0
    with tempfile.TemporaryDirectory(prefix="chaoskit-bench-docker-") as tmp:
        root = Path(tmp)
        backend = DockerBackend(root / "run", root / "data")
        journal = Journal(root / "run" / "journal.jsonl", source="bench")
        # one replica: recovery is a restart (with two, the gateway fails over instead)
        stack = ReferenceStack(backend, root / "data", journal.path, StackConfig(replicas=1))
        stack.specs[SERVING] = serving_spec(stack)
        with stack:
            goldens = Goldens(stack.model_base_path)
            for i in range(runs):
                samples["cold"].append(cold_start(stack, goldens))
                for key, fault in (("kill", KillService(SERVING)), ("hang", HangService(SERVING))):
                    experiment = Experiment(f"docker-{key}-{i}", stack, journal, Objectives(),
                                            dr_config=config, seed=i, backend="docker")
                    with experiment:
                        result = experiment.run(fault)
                    samples[f"ttd_{key}"].append(result.ttd_s)
                    samples[f"rto_{key}"].append(result.rto_s)
                    if key == "hang" and result.rto_s is not None:
                        hang_recovered += 1
                print(f"docker run {i}: " + "  ".join(f"{k} {v[-1]}" for k, v in samples.items()),
                      flush=True)  # fmt: skip
            backend.stop(SERVING)  # one serving container at a time on two cores
            policies = {
                (policy, fault): policy_recovery(root, stack, goldens, policy, fault,
                                                 policy_timeout)  # fmt: skip
                for policy in ("on-failure", "always")
                for fault in ("kill", "pause")
            }
    medians = {
        k: statistics.median(x for x in v if x is not None) if any(x is not None for x in v)
        else None
        for k, v in samples.items()
    }
    return {**medians, "hang_recovered": f"{hang_recovered}/{runs}", "policies": policies,
            "policy_timeout": policy_timeout, "runs": runs}  # fmt: skip


def print_table(m: dict[str, Any]) -> bool:
    """Print the Docker columns; True when the issue's targets are met."""

    def fmt(v: float | None) -> str:
        return "  n/a" if v is None else f"{v:.3f}"

    target = None if None in (m["cold"], m["ttd_kill"]) else m["cold"] + m["ttd_kill"] + 0.5
    print(f"\nDocker backend, medians of {m['runs']} runs")
    print(f"{'metric':<44}{'median':>10}{'target':>10}")
    print(f"{'serving container cold start (s)':<44}{fmt(m['cold']):>10}")
    print(f"{'TTD, kill (s)':<44}{fmt(m['ttd_kill']):>10}")
    print(f"{'RTO, kill, DR engine (s)':<44}{fmt(m['rto_kill']):>10}{fmt(target):>10}")
    print(f"{'TTD, pause (s)':<44}{fmt(m['ttd_hang']):>10}")
    print(f"{'RTO, pause, DR engine (s)':<44}{fmt(m['rto_hang']):>10}"
          f"{'recovered ' + m['hang_recovered']:>22}")  # fmt: skip
    for (policy, fault), value in m["policies"].items():
        shown = fmt(value) if value is not None else f"never (>{m['policy_timeout']:g}s)"
        print(f"{f'RTO, {fault}, restart policy {policy} (s)':<44}{shown:>10}")
    ok = (
        target is not None and m["rto_kill"] is not None and m["rto_kill"] <= target
        and m["hang_recovered"].split("/")[0] == m["hang_recovered"].split("/")[1]
    )
    print("docker targets met" if ok else "DOCKER TARGETS MISSED")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--policy-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    return 0 if print_table(measure(args.runs, args.policy_timeout)) else 1


if __name__ == "__main__":
    sys.exit(main())
