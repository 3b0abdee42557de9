"""Rollback benchmark: moving the ``stable`` label back one version against a cold load.

Each through the model config file of a running ``python -m chaoskit.serving`` and
through its gRPC ``ModelService.HandleReloadConfigRequest`` (how the quality guard rolls
back, and the one way a real tensorflow/serving takes it), side by side in one run:

* label switch: versions N-1 and N loaded, ``stable`` at N; the config moves it to N-1;
  timed from the config write to the first ``:predict`` on ``/labels/stable`` answered
  by N-1 (its canary outputs);
* cold load: the config adds a version that is not loaded; timed from the write to the
  first ``:predict`` on ``/versions/K`` answered by K (every run a version never loaded).

Config and version polls every ``--poll`` seconds on both sides, so each figure from the
file write holds up to one poll wait (a tunable, TF Serving's minimum is 1 s); a gRPC
reload applies the labels before it answers, and a new version loads at the next poll;
the figures from the moment the server applied the config (its journal) leave the
config poll out.
Prints the medians of ``--runs`` and the ratios cold load / switch (issue 15: a
rollback costs no more than a label switch when the good version is still loaded).

    .venv/bin/python bench/rollback.py [--runs 5] [--poll 0.05]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chaoskit import model as ref
from chaoskit.atomic import atomic_write_text
from chaoskit.journal import JOURNAL_ENV, read_journal
from chaoskit.serving.client import ServingClient
from chaoskit.serving.config import ServingConfig, VersionPolicy
from chaoskit.serving.grpc_client import GrpcServingClient
from chaoskit.stack.ports import free_port
from chaoskit.waiting import wait_until

MODEL = "reference"


def specific(*versions: int, **labels: int) -> ServingConfig:
    return ServingConfig(VersionPolicy("specific", versions=frozenset(versions)), labels)


class Bench:
    def __init__(self, root: Path, versions: list[int], poll: float) -> None:
        self.base = root / "models"
        for version in versions:
            module = ref.serving_module(ref.build_model(seed=10 * version))
            ref.export_saved_model(module, self.base, version, step=version)
        self.golden = {v: ref.load_canary(self.base / str(v))["outputs"] for v in versions}
        self.config_file = root / "model-config.json"
        self.journal = root / "journal.jsonl"
        self.write(specific(max(versions)))
        port_file = root / "port"
        grpc_port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "chaoskit.serving", "--model-name", MODEL,
                "--model-base-path", str(self.base), "--rest-port", "0",
                "--port-file", str(port_file), "--poll-interval", str(poll),
                "--model-config-file", str(self.config_file),
                "--model-config-file-poll-wait-seconds", str(poll),
                "--grpc-port", str(grpc_port),
            ],
            env={**os.environ, JOURNAL_ENV: str(self.journal)},
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        port = wait_until(lambda: port_file.exists() and port_file.read_text(), 30, what="port")
        self.client = ServingClient("127.0.0.1", int(port), MODEL, timeout=30)
        self.grpc = GrpcServingClient("127.0.0.1", grpc_port, MODEL, timeout=30)

    def write(self, config: ServingConfig) -> None:
        atomic_write_text(self.config_file, json.dumps(config.as_json()), durable=False)

    def reload(self, config: ServingConfig) -> None:
        answer = self.grpc.reload_config(config, str(self.base))
        if not answer.ok:
            raise SystemExit(f"HandleReloadConfigRequest refused: {answer.body}")

    def answers(self, version: int, *, label: str | None = None, at: int | None = None) -> bool:
        """Whether a ``:predict`` (on *label*, or version *at*) is answered by *version*."""
        answer = self.client.predict(ref.CANARY_INPUTS, label=label, version=at)
        if not answer.ok:
            return False
        got = [v for row in answer.body["predictions"] for v in row]
        want = [v for row in self.golden[version] for v in row]
        return max(abs(a - b) for a, b in zip(got, want, strict=True)) <= ref.CANARY_TOLERANCE

    def timed(self, config: ServingConfig, done: Callable[[], bool], *,
              via: str = "file") -> tuple[float, float]:  # fmt: skip
        """Seconds from giving *config* (*via* the file or gRPC) to *done* holding, and
        from the server applying it (its journal's ``serving.config_applied``; one
        monotonic clock) to *done*."""
        start = time.monotonic()
        (self.write if via == "file" else self.reload)(config)
        wait_until(done, 120, interval=0.001, what=f"{config.as_json()} in effect")
        end = time.monotonic()
        applied = [
            e["t"]
            for e in read_journal(self.journal)
            if e["event"] == "serving.config_applied" and e["t"] >= start
        ]
        return end - start, end - applied[-1]

    def close(self) -> None:
        self.grpc.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--poll", type=float, default=0.05, metavar="SECONDS")
    args = parser.parse_args()
    old, new = 2 * args.runs + 1, 2 * args.runs + 2  # the label pair; the rest: cold loads
    results: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="chaoskit-rollback-") as tmp:
        bench = Bench(Path(tmp), list(range(1, new + 1)), args.poll)
        try:
            never_loaded = iter(range(1, 2 * args.runs + 1))
            for _ in range(args.runs):
                for via in ("file", "grpc"):  # in turns: both see the same machine
                    switches, colds = results.setdefault(via, ([], []))
                    bench.timed(  # the starting point: old and new loaded, stable at new
                        specific(old, new, stable=new),
                        lambda: bench.answers(new, label="stable") and bench.answers(old, at=old),
                        via=via)  # fmt: skip
                    rollback = specific(old, new, stable=old)
                    switches.append(bench.timed(
                        rollback, lambda: bench.answers(old, label="stable"), via=via))
                    cold = next(never_loaded)
                    colds.append(bench.timed(specific(old, new, cold, stable=old),
                                             functools.partial(bench.answers, cold, at=cold),
                                             via=via))  # fmt: skip
        finally:
            bench.close()
    print(f"poll wait (config file and versions): {args.poll * 1000:.0f} ms, runs: {args.runs}")
    for via, (switches, colds) in results.items():
        given = "the config write" if via == "file" else "the HandleReloadConfigRequest call"
        for what, index in ((f"from {given}", 0), ("from the server applying it", 1)):
            switch = [s[index] for s in switches]
            cold = [c[index] for c in colds]
            print(f"{via}, {what}:")
            print("  label switch N -> N-1 (ms): " + " ".join(f"{s * 1000:.1f}" for s in switch))
            print("  cold load of a version (ms): " + " ".join(f"{c * 1000:.1f}" for c in cold))
            ms, mc = statistics.median(switch), statistics.median(cold)
            print(f"  medians: switch {ms * 1000:.1f} ms, cold load {mc * 1000:.1f} ms;"
                  f" cold load / switch {mc / ms:.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
