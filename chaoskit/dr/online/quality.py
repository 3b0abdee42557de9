"""Is a new model version good enough to serve?  Scored on labelled data, judged against
the best recent versions, never passed on too little evidence.

The canary's golden outputs prove that what is served is what was exported; they cannot
say whether a valid, newly trained version is *worse* (poisoned labels, a diverged run,
a preprocessing skew), because a new version is expected to compute new outputs.  Here
each version answers a labelled set (inputs with expected values or labels): a
regression is scored by its mean squared error, a classifier by its accuracy, and the
outputs are compared with the serving version's on the same inputs (PSI and the
Kolmogorov-Smirnov statistic, per output column, the largest reported) to show drift.

:class:`QualityGate` decides *promote* (within the margin of the best recent promoted
version, or the first version when no floor is set), *breach* (worse than that, or
non-finite outputs) or *inconclusive* (fewer answered samples than the gate needs).
Inconclusive is never a pass: Flagger users report analyses with no samples passing
silently (flagger#1035), and a rollout gate that does that is worse than none.
numpy only: scoring 1,000 examples costs milliseconds, and scipy stays out of the
probe's process.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chaoskit.canary import check_canary, read_json_file, signature_inputs
from chaoskit.errors import ConfigError
from chaoskit.serving.client import ServingClient

REGRESSION = "regression"
CLASSIFICATION = "classification"
TASKS = (REGRESSION, CLASSIFICATION)
PROMOTE, BREACH, INCONCLUSIVE = "promote", "breach", "inconclusive"
REFERENCE_SEED = 1 << 20
"""The held-out set's seed: the trainer draws its batches with ``(seed, step)`` from TF's
stateless RNG, never from numpy with this seed, so the reference set is data it never saw."""


@dataclass(frozen=True)
class LabelledSet:
    """Inputs as TF Serving REST rows ("instances") and what each should produce."""

    instances: list[Any]
    expected: np.ndarray
    task: str
    source: str

    def __len__(self) -> int:
        return len(self.instances)


def reference_labelled_set(n: int = 1000, *, seed: int = 0) -> LabelledSet:
    """Held-out data from the reference model's teacher (see :mod:`chaoskit.model`)."""
    from chaoskit import model as ref

    rng = np.random.default_rng(REFERENCE_SEED + seed)
    x = rng.standard_normal((n, ref.INPUT_DIM)).astype(np.float32)
    teacher = np.asarray(ref.teacher_weights(seed), dtype=np.float32)
    y = np.tanh(x @ teacher) * 2.0 + 0.1 * np.sin(3.0 * x[:, : ref.OUTPUT_DIM])
    return LabelledSet(x.tolist(), y, REGRESSION, f"reference held-out set (seed {seed}, {n})")


def read_labelled_set(path: Path, *, task: str, where: str) -> LabelledSet:
    """A JSON file ``{"instances": [...], "labels": [...]}`` (classification: one class
    index per instance) or ``{"instances": [...], "targets": [...]}`` (regression)."""
    if task not in TASKS:
        raise ConfigError(f"{where}: task must be one of {', '.join(TASKS)}, got {task!r}")
    key = "labels" if task == CLASSIFICATION else "targets"
    body = read_json_file(path, what="labelled set", where=where)
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) \
            or not isinstance(body.get(key), list):
        raise ConfigError(
            f"{where}: labelled set {str(path)!r} must hold lists \"instances\" and {key!r} "
            f"(a {task} set)"
        )
    instances, expected = body["instances"], body[key]
    if not instances or len(instances) != len(expected):
        raise ConfigError(
            f"{where}: labelled set {str(path)!r} has {len(instances)} instances and "
            f"{len(expected)} {key}; they must be as many, and not none"
        )
    try:
        values = np.asarray(expected, dtype=np.int64 if task == CLASSIFICATION else np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {key} of {str(path)!r} are not all numbers of one "
                          f"shape: {e}") from e  # fmt: skip
    return LabelledSet(instances, values, task, str(path))


def check_labelled(labelled: LabelledSet, client: ServingClient, version: int | None = None,
                   *, label: str | None = None) -> None:  # fmt: skip
    """ConfigError when *labelled*'s instances do not fit the signature of *version* (or
    *label*) on the server, or when that version is not there to ask."""
    where = f"labelled set {labelled.source}"
    spec = f"version {version}" if label is None else f"label {label!r}"
    try:
        answer = client.metadata(version, label=label)
    except OSError as e:
        raise ConfigError(f"{where}: the server does not answer: {e}") from e
    if not answer.ok:
        raise ConfigError(f"{where}: {spec} of model {client.model!r}: "
                          f"{answer.body.get('error', answer.status)}")  # fmt: skip
    inputs = signature_inputs(answer.body, client.signature_name or "serving_default")
    check_canary(labelled.instances, inputs, where=where)
    for name, signature_input in inputs.items():
        want = signature_input["shape"]
        if want is None:
            continue
        for i, row in enumerate(labelled.instances):
            value = row[name] if isinstance(row, dict) else row
            got = list(np.shape(value))
            if len(got) != len(want) - 1 or any(
                w >= 0 and w != g for w, g in zip(want[1:], got, strict=True)
            ):
                raise ConfigError(
                    f"{where}: instance {i} of input {name!r} has shape {got}; the signature "
                    f"expects {want[1:]} per instance (-1: any)"
                )


def score(task: str, outputs: np.ndarray, expected: np.ndarray) -> float:
    """Mean squared error (regression, lower is better) or accuracy (classification:
    the arg-max of each output row, or the output itself when it is one number)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task == CLASSIFICATION:
        predicted = outputs.argmax(axis=-1) if outputs.ndim > 1 else np.rint(outputs)
        return float(np.mean(predicted == expected))
    if outputs.shape != expected.shape:
        raise ConfigError(
            f"the model answers outputs of shape {list(outputs.shape[1:])} per instance; "
            f"the labelled set's targets have shape {list(expected.shape[1:])}"
        )
    return float(np.mean((outputs - expected) ** 2))


@dataclass(frozen=True)
class Answers:
    """A version's outputs on the first ``len(outputs)`` instances of a labelled set, and
    why the rest went unanswered (None when every instance was answered)."""

    outputs: np.ndarray
    error: str | None = None


def answers(client: ServingClient, labelled: LabelledSet, *, version: int | None = None,
            label: str | None = None, output: str | None = None,
            batch: int = 250) -> Answers:  # fmt: skip
    """Ask *version* (or *label*; neither: the newest) to predict every instance, in
    batches; stops at the first failed batch.  *output* names the output to score when
    the signature has several (TF Serving's rows are then objects)."""
    rows: list[Any] = []
    for start in range(0, len(labelled), batch):
        chunk = labelled.instances[start:start + batch]
        try:
            answer = client.predict(chunk, version=version, label=label)
        except OSError as e:
            return Answers(np.asarray(rows, dtype=np.float64), f"no answer: {e}")
        predictions = answer.body.get("predictions")
        if not answer.ok or not isinstance(predictions, list) or len(predictions) != len(chunk):
            why = answer.body.get("error") or f"{len(predictions or [])} predictions"
            return Answers(np.asarray(rows, dtype=np.float64), f"HTTP {answer.status}: {why}")
        if predictions and isinstance(predictions[0], dict):
            if output is None or output not in predictions[0]:
                raise ConfigError(
                    f"the model answers outputs {sorted(predictions[0])}; name the one to "
                    f"score (got {output!r})"
                )
            predictions = [row[output] for row in predictions]
        rows.extend(predictions)
    return Answers(np.asarray(rows, dtype=np.float64))


def _columns(values: np.ndarray) -> list[np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    return [values] if values.ndim == 1 else list(values.reshape(len(values), -1).T)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of *current* against *reference*, per output column
    (bins at the reference's deciles), the largest; 0.1 moderate, 0.25 major shift."""
    worst = 0.0
    for ref, cur in zip(_columns(reference), _columns(current), strict=True):
        edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        ref_share = np.bincount(np.searchsorted(edges, ref), minlength=len(edges) + 1) / len(ref)
        cur_share = np.bincount(np.searchsorted(edges, cur), minlength=len(edges) + 1) / len(cur)
        ref_share, cur_share = np.clip(ref_share, 1e-6, None), np.clip(cur_share, 1e-6, None)
        worst = max(worst, float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share))))
    return worst


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical
    distribution functions), per output column, the largest."""
    worst = 0.0
    for ref, cur in zip(_columns(reference), _columns(current), strict=True):
        ref, cur = np.sort(ref), np.sort(cur)
        points = np.concatenate([ref, cur])
        gap = np.abs(np.searchsorted(ref, points, side="right") / len(ref)
                     - np.searchsorted(cur, points, side="right") / len(cur))  # fmt: skip
        worst = max(worst, float(gap.max()))
    return worst


@dataclass(frozen=True)
class Verdict:
    """One version judged: what it scored, against what, and why the decision."""

    version: int
    decision: str
    score: float | None
    best: float | None
    samples: int
    reason: str
    psi: float | None = None
    ks: float | None = None

    def fields(self) -> dict[str, Any]:
        """The journal record's fields (``quality.verdict``)."""
        return asdict(self)


class QualityGate:
    """Judges each new version against the best of the last *window* promoted ones.

    *margin*: for a regression, how much larger the new error may be, relative to the
    best (0.1 = 10 % worse); for a classifier, how many accuracy points lower.  *floor*
    (optional) is an absolute bound every version must meet, also the first: a largest
    error, or a smallest accuracy.  *min_samples*: answered instances a verdict needs.
    """

    def __init__(self, task: str, *, margin: float, min_samples: int, floor: float | None = None,
                 window: int = 5) -> None:  # fmt: skip
        if task not in TASKS:
            raise ConfigError(f"quality task must be one of {', '.join(TASKS)}, got {task!r}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"quality margin must be a number >= 0, got {margin!r}")
        if min_samples < 1:
            raise ConfigError(f"quality min_samples must be >= 1, got {min_samples!r}")
        self.task, self.margin, self.floor, self.min_samples = task, margin, floor, min_samples
        self.promoted: deque[tuple[int, float]] = deque(maxlen=window)

    @property
    def lower_is_better(self) -> bool:
        return self.task == REGRESSION

    def best(self) -> float | None:
        """The best score of the recent promoted versions, None before the first."""
        scores = [s for _, s in self.promoted]
        if not scores:
            return None
        return min(scores) if self.lower_is_better else max(scores)

    def bound(self) -> float | None:
        """The worst score a new version may have and still be promoted."""
        best = self.best()
        limits = [] if self.floor is None else [self.floor]
        if best is not None:
            limits.append(best * (1 + self.margin) if self.lower_is_better else best - self.margin)
        if not limits:
            return None
        return min(limits) if self.lower_is_better else max(limits)

    @property
    def metric(self) -> str:
        return "mse" if self.lower_is_better else "accuracy"

    def judge(self, version: int, outputs: np.ndarray | None, labelled: LabelledSet,
              serving_outputs: np.ndarray | None = None) -> Verdict:  # fmt: skip
        """The verdict on *version* from its *outputs* on *labelled* (None or fewer rows
        than the set: only the first ``len(outputs)`` instances were answered); a
        promoted version joins the recent ones the next are judged against."""
        verdict = self._decide(version, outputs, labelled, serving_outputs)
        if verdict.decision == PROMOTE:
            assert verdict.score is not None
            self.promoted.append((version, verdict.score))
        return verdict

    def check(self, version: int, outputs: np.ndarray | None,
              labelled: LabelledSet) -> str | None:  # fmt: skip
        """None when *outputs* would be promoted now, else why not (nothing recorded):
        a served version's quality confirmed again."""
        verdict = self._decide(version, outputs, labelled, None)
        return None if verdict.decision == PROMOTE else verdict.reason

    def _decide(self, version: int, outputs: np.ndarray | None, labelled: LabelledSet,
                serving_outputs: np.ndarray | None) -> Verdict:  # fmt: skip
        answered = 0 if outputs is None else len(outputs)
        best = self.best()
        if answered < self.min_samples:
            return Verdict(version, INCONCLUSIVE, None, best, answered,
                           f"{answered} answered samples, the gate needs {self.min_samples}")
        outputs = np.asarray(outputs, dtype=np.float64)
        drift = {}
        if serving_outputs is not None and len(serving_outputs) == answered:
            drift = {"psi": psi(serving_outputs, outputs),
                     "ks": ks_statistic(serving_outputs, outputs)}  # fmt: skip
        if not np.all(np.isfinite(outputs)):
            bad = int(np.sum(~np.all(np.isfinite(outputs.reshape(answered, -1)), axis=1)))
            return Verdict(version, BREACH, None, best, answered,
                           f"{bad} of {answered} outputs are not finite (NaN or inf)", **drift)
        value = score(self.task, outputs, labelled.expected[:answered])
        bound = self.bound()
        name = "error" if self.lower_is_better else "accuracy"
        if bound is None:
            decision, reason = PROMOTE, f"first version: {name} {value:.4g} is the baseline"
        elif (value <= bound) if self.lower_is_better else (value >= bound):
            decision, reason = PROMOTE, f"{name} {value:.4g} within the bound {bound:.4g}"
        else:
            decision, reason = BREACH, f"{name} {value:.4g} beyond the bound {bound:.4g}"
        return Verdict(version, decision, value, best, answered, reason, **drift)
