"""The quality guard: no model version is served as ``stable`` before it proved good enough.

Clients behind it predict on the version label ``stable``.  The guard owns the serving
replicas' model config (:mod:`chaoskit.serving.config`): it sends each config to every
replica with a gRPC port through ``ModelService.HandleReloadConfigRequest`` (at once,
and the one way a real tensorflow/serving switches labels at run time), and writes it to
the replicas' model config file when the stack has one (which a replica started
meanwhile reads); a replica that restarts without that file gets the config again.
Each new version the trainer exports is loaded beside the stable one (policy
``specific``), scored on the labelled set through one replica's ``/versions/N``, and
judged by a
:class:`~chaoskit.dr.online.quality.QualityGate` (``quality.verdict``):

- *promote*: ``stable`` moves to it, and the previous version is unloaded;
- *breach* (a score beyond the gate's bound, non-finite outputs, or a predict more than
  ``max_slowdown`` times slower than the stable version's, ``quality.latency``):
  ``detected`` (service ``model``, signal ``quality``), then the rollback:
  ``stable`` stays on (or goes back to) the last good version, the bad one is unloaded
  and set aside out of the model store for good (quarantined: never served again), the
  stable label's quality is confirmed on the labelled set (``steady_state.ok``), and,
  when the stack has a trainer whose checkpoints the store guard keeps, the trainer is
  rewound to the checkpoint the last good version came from: it would otherwise go on
  from the weights that made the bad version (NaN weights never heal) -- not for a
  slow version, whose weights are fine;
- *inconclusive* (too few answers): nothing moves; it is never a pass.

What the rollback lost (RPO) is measured from the rewind's ``restore.done``.  On stop the
config goes back to the stack's default (serve the newest version).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from chaoskit.background import BackgroundLoop
from chaoskit.dr.online.quality import (
    BREACH,
    PROMOTE,
    LabelledSet,
    QualityGate,
    Verdict,
    answers,
)
from chaoskit.errors import ChaosKitError, StackError
from chaoskit.journal import Journal
from chaoskit.model import load_canary, version_dirs
from chaoskit.serving.client import ServingClient
from chaoskit.serving.config import ServingConfig, VersionPolicy, write_config

STABLE = "stable"
LATENCY_SAMPLES = 15
"""Canary predicts per version when comparing a new version's latency with stable's."""
LATENCY_NOISE_S = 0.01
"""A slowdown smaller than this is noise on a loaded machine, whatever its ratio."""
MODEL = "model"
"""The service name a quality breach is detected on: the model, not a process."""


def pinned(*versions: int, stable: int) -> ServingConfig:
    """Serve exactly *versions*, with ``stable`` on *stable*."""
    return ServingConfig(VersionPolicy("specific", versions=frozenset(versions)), {STABLE: stable})


class QualityGuard(BackgroundLoop):
    """Judges every new version of *stack*'s model before clients see it (see module)."""

    thread_name = "chaoskit-quality"
    stop_timeout = 240.0
    """A rollback in progress ends first: a trainer rewind waits for TensorFlow to start."""

    def __init__(
        self,
        stack: Any,
        labelled: LabelledSet,
        gate: QualityGate,
        journal: Journal,
        *,
        store_guard: Any = None,
        max_slowdown: float = 3.0,
        interval: float = 0.2,
        load_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.config_file = getattr(stack, "model_config_file", None)
        self.reloaders = {r: c for r in stack.replicas
                          if (c := stack.grpc_client(r, timeout=10.0)) is not None}  # fmt: skip
        if self.config_file is None and not self.reloaders:
            raise StackError("a quality gate needs the replicas' model config file or their "
                             "gRPC port (HandleReloadConfigRequest): the stack has neither")
        self.stack = stack
        self.labelled = labelled
        self.gate = gate
        self.journal = journal
        self.store_guard = store_guard
        self.max_slowdown = max_slowdown
        self.interval = interval
        self.load_timeout = load_timeout
        self.config = ServingConfig()
        """The config the replicas were last given."""
        self._instances: dict[str, str | None] = {}
        """Each replica's process or container when it last took the config."""
        self._refusals: dict[str, tuple[str | None, str]] = {}
        self.stable: int | None = None
        self.stable_outputs: np.ndarray | None = None
        self.judged: set[int] = set()
        self._rewound_wall = 0.0
        """When the trainer was last rewound: versions exported before come from the
        training run it discarded."""

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> QualityGuard:
        """Judge the newest version now; it must be promoted, or there is nothing good to
        serve as ``stable`` and no experiment can start (StackError saying why)."""
        newest = max(version_dirs(self.stack.model_base_path), default=None)
        if newest is None:
            raise StackError(f"no model version in {self.stack.model_base_path} to judge")
        try:
            verdict = self._judge(newest)
        except BaseException:
            self._reset()
            raise
        if verdict != PROMOTE:
            self._reset()
            raise StackError(
                f"the quality gate did not promote version {newest}, the newest: no version "
                "is good enough to serve as 'stable' (see quality.verdict in the journal)"
            )
        return super().start()

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        self._reset()

    def _reset(self) -> None:
        """The stack's default again: the replicas serve the newest version."""
        self._apply(ServingConfig())
        for client in self.reloaders.values():
            client.close()
        self.journal.record("quality.released", stable=self.stable)

    def _apply(self, config: ServingConfig) -> None:
        """Give every replica *config* (see the module docstring); a replica that cannot
        take it now (down, restarting) is recorded, and given it again once restarted."""
        self.config = config
        if self.config_file is not None:
            write_config(self.config_file, config)
        for replica in self.reloaders:
            self._reload(replica)

    def _reload(self, replica: str) -> None:
        """``HandleReloadConfigRequest`` on *replica*; refused, it is asked again at the
        guard's next look, and meanwhile given the policy alone: labels may only name
        versions it has loaded, and a restarted replica loads its default ones."""
        instance = self.stack.backend.instance(replica)
        refused = self._reload_error(replica, self.config)
        if refused is None:
            self._instances[replica] = instance
            return
        self._instances.pop(replica, None)
        if self.config.labels:
            self._reload_error(replica, ServingConfig(self.config.policy))
        if self._refusals.get(replica) != (instance, refused):  # once per instance and reason
            self._refusals[replica] = (instance, refused)
            self.journal.record("quality.reload_failed", replica=replica, error=refused)

    def _reload_error(self, replica: str, config: ServingConfig) -> str | None:
        try:
            answer = self.reloaders[replica].reload_config(
                config, str(self.stack.model_base_path), timeout=5.0)
        except OSError as e:
            return str(e)
        return None if answer.ok else str(answer.body.get("error"))

    def _reload_restarted(self) -> None:
        """A replica restarted (or refused) since it was given the config: again.  Only
        without a config file: a replica reads that when it starts, and at every poll."""
        if self.config_file is not None:
            return
        for replica in self.reloaders:
            if self.stack.backend.instance(replica) != self._instances.get(replica):
                self._reload(replica)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._reload_restarted()
            # every new version, oldest first: one exported between two looks (a second
            # exporter, a trainer ahead of the gate) is judged too, not skipped unseen
            waiting = sorted(v for v in version_dirs(self.stack.model_base_path)
                             if v not in self.judged and v > (self.stable or 0))  # fmt: skip
            if waiting:
                self._judge(waiting[0])
            self._stop.wait(self.interval)

    # -- judging ---------------------------------------------------------------------
    def _clients(self) -> list[ServingClient]:
        return [self.stack.direct_client(r, timeout=10.0) for r in self.stack.replicas]

    def _loaded_everywhere(self, version: int) -> bool:
        """Wait until every replica has *version* AVAILABLE (False after load_timeout)."""
        deadline = time.monotonic() + self.load_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(version in c.available_versions(timeout=2.0) for c in self._clients()):
                return True
            time.sleep(0.02)
        return False

    def _judge(self, version: int) -> str:
        """Load *version* beside stable, score it, and act on the verdict."""
        self.judged.add(version)
        if self.stable is None:
            self._apply(pinned(version, stable=version))
        else:
            self._apply(pinned(self.stable, version, stable=self.stable))
        outputs, slow = None, None
        if self._loaded_everywhere(version):
            slow = self._slower(version)
            if slow is None:
                outputs = answers(self._clients()[0], self.labelled, version=version).outputs
        if slow is None:
            verdict = self.gate.judge(version, outputs, self.labelled, self.stable_outputs)
        else:  # its quality does not matter: too slow to serve
            verdict = Verdict(version, BREACH, None, self.gate.best(), 0, slow)
        self.journal.record("quality.verdict", **verdict.fields(), step=self._step(version),
                            stable=self.stable, metric=self.gate.metric)  # fmt: skip
        if verdict.decision == PROMOTE:
            self._promote(version, outputs)
        elif verdict.decision == BREACH:  # a slow version is no trainer's fault: no rewind
            self._roll_back(version, verdict.reason, rewind=slow is None)
        else:  # inconclusive: unload it again, stable stays
            if self.stable is not None:
                self._apply(pinned(self.stable, stable=self.stable))
        return verdict.decision

    def _slower(self, version: int) -> str | None:
        """Why *version* is too slow to serve, or None: the median latency of canary
        predicts on it against the stable version's, asked in turns on one replica."""
        if self.stable is None:
            return None
        client, inputs = self._clients()[0], self.stack.goldens.inputs()
        times: dict[int, list[float]] = {version: [], self.stable: []}
        for _ in range(LATENCY_SAMPLES):
            for asked in times:
                start = time.monotonic()
                answer = client.predict(inputs, version=asked)
                if answer.ok:
                    times[asked].append(time.monotonic() - start)
        if not times[version] or not times[self.stable]:
            return None  # no answers: the labelled set's scoring says so
        new, old = (statistics.median(times[v]) for v in (version, self.stable))
        self.journal.record("quality.latency", version=version, median_s=round(new, 6),
                            stable=self.stable, stable_median_s=round(old, 6))  # fmt: skip
        if new > self.max_slowdown * old and new - old > LATENCY_NOISE_S:
            return (f"its predict is {new / old:.1f}x slower than the stable version's (median "
                    f"{new * 1000:.1f} ms against {old * 1000:.1f} ms; at most "
                    f"{self.max_slowdown:g}x)")  # fmt: skip
        return None

    def _step(self, version: int) -> int:
        """The trainer step *version* was exported at (its canary says; else the version)."""
        try:
            step = load_canary(self.stack.model_base_path / str(version)).get("step")
        except (OSError, ValueError, ChaosKitError):  # set aside meanwhile: its number
            step = None
        return int(step) if isinstance(step, int) else version

    def _promote(self, version: int, outputs: Any) -> None:
        self._apply(pinned(version, stable=version))
        self.stable, self.stable_outputs = version, np.asarray(outputs, dtype=np.float64)
        self._await_label(version)
        self.journal.record("quality.promoted", version=version, label=STABLE)

    def _await_label(self, version: int) -> None:
        """Until every replica answers ``stable`` with *version* (the config is polled)."""
        deadline = time.monotonic() + self.load_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(c.label_version(STABLE, timeout=2.0) == version for c in self._clients()):
                return
            time.sleep(0.02)
        if self._stop.is_set():
            return  # stopping: the default config comes next
        raise StackError(f"the replicas did not move {STABLE!r} to version {version} "
                         f"within {self.load_timeout:g}s (see serving.config_refused)")  # fmt: skip

    def _roll_back(self, version: int, reason: str, *, rewind: bool = True) -> None:
        """Keep serving the last good version, set the bad one aside, rewind training."""
        self.journal.record("detected", service=MODEL, signal="quality", version=version,
                            reason=f"version {version}: {reason}")  # fmt: skip
        good = self.stable
        self.journal.record("recovery.started", action="rollback", service=MODEL,
                            version=version, stable=good)  # fmt: skip
        if good is None:
            self.journal.record("recovery.failed", action="rollback", service=MODEL,
                                reason="no good version to roll back to")  # fmt: skip
            return
        self._apply(pinned(good, stable=good))
        self._await_label(good)
        exported = self._exported_wall(version)
        why = f"quality breach of version {version}: {reason}"
        self._set_aside(version, why)
        self.journal.record("recovered", action="rollback", service=MODEL, stable=good,
                            quarantined=version)  # fmt: skip
        self._confirm(good)
        if not rewind or self.store_guard is None or self.stack.trainer is None:
            return
        if exported < self._rewound_wall:
            return  # the run that exported it was already rewound
        self._rewound_wall = time.time()
        step = self._step(good)
        self.store_guard.call(lambda: self.store_guard.rewind_trainer(step, why), timeout=180.0)
        for stale in version_dirs(self.stack.model_base_path):
            if stale > good and self._exported_wall(stale) < self._rewound_wall:
                self.judged.add(stale)
                self._set_aside(stale, f"exported by the training rewound after the {why}")

    def _exported_wall(self, version: int) -> float:
        try:
            return (self.stack.model_base_path / str(version)).stat().st_mtime
        except OSError:
            return 0.0

    def _set_aside(self, version: int, reason: str) -> None:
        """Out of the model store for good, through the store guard (which would otherwise
        restore it as a deleted version)."""
        if self.store_guard is not None:
            self.store_guard.call(lambda: self.store_guard.set_version_aside(version, reason))
            self.judged.discard(version)  # gone: the number exported again is a new version

    def _confirm(self, good: int) -> None:
        """Clients' path (the gateway, label ``stable``) scores as *good* did."""
        client = self.stack.client(timeout=10.0).on_label(STABLE)
        got = answers(client, self.labelled).outputs
        verdict = self.gate.check(good, got, self.labelled)
        if verdict is None:
            self.journal.record("steady_state.ok", phase="recovery", label=STABLE, version=good)
        else:
            self.journal.record("steady_state.violated", phase="recovery", reason=verdict)
