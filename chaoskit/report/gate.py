"""The CI gate: check a run's results against TTD/RTO/RPO budgets, one line per breach.

Rules (also in ``chaoskit gate --help``):

* TTD and RTO budgets apply to every experiment.  A value that was never measured
  breaches the budget: an experiment that never recovered has no RTO, and that is the
  worst RTO, not a pass.  An experiment that injected no fault breaches too.
* An RPO budget applies to the experiments that measure RPO: those that restored a
  recovery point, or that declared an RPO objective themselves (no restore is then an
  unbounded RPO).  Killing a model server loses no data, so it has no RPO to check; the
  gate says how many experiments the RPO budget did not apply to.
* An experiment whose own verdict is fail (its own budgets, wrong predictions, failed
  integrity check, the test itself failed) breaches the gate with each of its reasons,
  unless ``--budgets-only``.  A reason the gate's own budget already reported is not
  repeated.
* A run without experiments fails: a gate that checked nothing must not pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaoskit.durations import format_duration, parse_duration
from chaoskit.errors import ConfigError
from chaoskit.report.metrics import ExperimentResult

METRICS = ("ttd", "rto", "rpo")
_UNMEASURED = {
    "ttd": "the fault was never detected",
    "rto": "the steady state was never restored",
}


@dataclass(frozen=True)
class Budget:
    """One budget: seconds for comparing, the user's own text for messages."""

    metric: str
    seconds: float
    text: str


@dataclass(frozen=True)
class Breach:
    experiment: str
    metric: str | None  # None: not a budget of the gate (the experiment's own verdict)
    message: str

    def line(self) -> str:
        return f"FAIL {self.experiment}: {self.message}"


def parse_budgets(values: dict[str, str | None]) -> tuple[list[Budget], list[str]]:
    """Budgets from ``{"ttd": "2s", ...}``, and one error message per value that does not parse."""
    budgets: list[Budget] = []
    errors: list[str] = []
    for metric in METRICS:
        text = values.get(metric)
        if text is None:
            continue
        try:
            budgets.append(Budget(metric, parse_duration(text, what=f"--{metric}"), text.strip()))
        except ConfigError as e:
            errors.append(str(e))
    return budgets, errors


def _breaches_of_budget(result: ExperimentResult, budget: Budget) -> Breach | None:
    name, label = result.name, budget.metric.upper()
    value: float | None = getattr(result, f"{budget.metric}_s")
    if budget.metric == "rpo" and value is None:
        return None  # nothing was restored and no RPO objective: RPO does not apply
    if result.fault is None:
        return Breach(name, budget.metric, f"{label} not measured: no fault was injected")
    if value is None:
        why = _UNMEASURED[budget.metric]
        return Breach(name, budget.metric, f"{label} not measured ({why}), budget {budget.text}")
    if value > budget.seconds:
        shown = format_duration(value)
        if shown == "unbounded":
            shown = "unbounded (no recovery point was restored)"
        return Breach(name, budget.metric, f"{label} {shown} exceeds budget {budget.text}")
    return None


def _reason_metric(reason: str) -> str | None:
    """Which metric an experiment's own reason is about, to avoid saying it twice."""
    for metric in METRICS:
        if reason.startswith(metric.upper() + " ") or reason == _UNMEASURED.get(metric):
            return metric
    if reason == "no fault was injected":
        return "*"
    return None


def check(
    results: list[ExperimentResult], budgets: list[Budget], *, verdicts: bool = True
) -> list[Breach]:
    """Every breach of *budgets* (and, with *verdicts*, of the experiments' own verdicts)."""
    breaches: list[Breach] = []
    for result in results:
        own = [b for b in (_breaches_of_budget(result, budget) for budget in budgets) if b]
        breaches += own
        if not verdicts or result.verdict == "pass":
            continue
        covered = {b.metric for b in own}
        for reason in result.reasons:
            metric = _reason_metric(reason)
            if metric is not None and (metric in covered or (metric == "*" and covered)):
                continue
            breaches.append(Breach(result.name, None, f"experiment failed: {reason}"))
    return breaches


def rpo_not_applicable(results: list[ExperimentResult]) -> int:
    """How many experiments an RPO budget did not apply to (nothing restored, no objective)."""
    return sum(1 for r in results if r.rpo_s is None)


def describe(budgets: list[Budget]) -> str:
    return ", ".join(f"{b.metric.upper()} {b.text}" for b in budgets)
