"""Golden outputs recorded by chaoskit, for models whose producer writes no canary file.

chaoskit's own trainer stores, with every version, the outputs that version computes for
the canary inputs (:mod:`chaoskit.dr.online.goldens`).  A user's trainer does not; so the first
time a version is AVAILABLE, chaoskit asks serving for that version's answer to the
canary twice and trusts it only when both answers agree (a version that does not load or
answers unstably gets no golden, so it never passes the steady state).  Goldens are
kept as JSON files in chaoskit's data directory, never in the user's model store, and
survive the experiments of a session.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaoskit.atomic import atomic_write_text
from chaoskit.dr.online.goldens import Goldens, max_abs_error
from chaoskit.errors import ChaosKitError
from chaoskit.serving.client import ServingClient

RULE = "answered alike twice when first seen"
"""What a recorded golden proves, as the report states it."""


class RecordedGoldens(Goldens):
    """Goldens of the versions serving has made AVAILABLE, recorded at first sight."""

    def __init__(
        self,
        model_base_path: Path,
        store: Path,
        inputs: list[Any],
        clients: Callable[[], list[ServingClient]],
        *,
        tolerance: float = 1e-4,
        signature_name: str | None = None,
    ) -> None:
        super().__init__(model_base_path)
        self.store = Path(store)
        self._inputs = list(inputs)
        self._clients = clients
        self.tolerance = tolerance
        self.signature_name = signature_name
        self._record_lock = threading.Lock()

    def inputs(self) -> list[Any]:
        return list(self._inputs)

    def set_inputs(self, rows: list[Any]) -> None:
        """The canary, once known (``auto`` is made from the signature serving reports)."""
        self._inputs = list(rows)

    def refresh(self) -> None:
        """Load stored goldens, then record those of AVAILABLE versions not seen yet.

        Every replica is asked, directly: replicas load a new version at different
        moments, and an answer of the one that loaded it first must find its golden.
        Callers wait for a recording in progress (not a race), and each asks again: a
        status call is cheap, and a version may have become AVAILABLE a moment ago.
        """
        self._load_stored()
        with self._record_lock:
            try:
                clients = self._clients()
            except ChaosKitError:
                return  # a replica not started yet: nothing to ask
            for client in clients:
                for version in client.available_versions(timeout=1.0):
                    if version not in self._by_version:
                        self._record(client, version)

    def _load_stored(self) -> None:
        for path in sorted(self.store.glob("*.json")):
            if not path.stem.isdigit() or int(path.stem) in self._by_version:
                continue
            try:
                canary = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            with self._lock:
                self._by_version[int(path.stem)] = canary

    def _record(self, client: ServingClient, version: int) -> None:
        answers = []
        for _ in range(2):
            try:
                answer = client.predict(
                    self._inputs, version=version, signature_name=self.signature_name,
                    timeout=2.0,
                )  # fmt: skip
            except OSError:
                return
            if not answer.ok or "predictions" not in answer.body:
                return
            answers.append(answer.body["predictions"])
        if max_abs_error(answers[1], answers[0]) > self.tolerance:
            return  # not stable: no golden, so the version never passes as correct
        canary = {
            "inputs": self._inputs, "outputs": answers[0], "version": version,
            "tolerance": self.tolerance, "signature_name": self.signature_name, "rule": RULE,
        }  # fmt: skip
        self.store.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.store / f"{version}.json", json.dumps(canary))
        with self._lock:
            self._by_version[version] = canary
