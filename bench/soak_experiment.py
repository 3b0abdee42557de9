"""The soak's experiment: random faults from every family, one at a time, until time is up.

Run by ``bench/soak.py`` (not collected by ``make test``: nothing matches ``test_*``).
Each fault is a case of an existing experiment: the standard suite's
(:mod:`chaoskit.suite`) or ``experiments/``'s, called with a started experiment of the
``chaos_experiments`` fixture as its ``chaos``, so a soak fault runs exactly the body,
the asserts and the budgets (read from its ``@pytest.mark.chaos``) that experiment has.
The families take turns; hypothesis draws the case of each family, the fault's seed and
the steady-state gap after it, from the seed ``--chaos-seed`` gives.  Each fault is its
own report row, named ``<test id>[<n> <kind> seed=<seed>]``.  A failing fault does not
stop the soak (its row and a ``soak.failed`` event say why); three in a row do (the stack
is broken, the rest would only repeat it), and the test fails at the end if any failed.

Environment: ``CHAOSKIT_SOAK_DURATION`` (seconds during which new faults start).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from chaoskit.durations import parse_duration
from chaoskit.suite import (
    test_checkpoints,
    test_dr_site,
    test_links,
    test_model_store,
    test_serving,
)
from experiments import test_corruption, test_network

DURATION_ENV = "CHAOSKIT_SOAK_DURATION"
MAX_CONSECUTIVE_FAILURES = 3
"""Failed faults in a row after which the soak stops: the stack no longer recovers."""
GAPS = (1, 5)
"""Seconds of undisturbed steady state after each fault (drawn), for the samplers."""
SHORTEST_FAULT = 5.0
"""No fault takes less (steady state, fresh recovery point, fault, recovery): bounds how
many examples hypothesis is asked for."""


@dataclass(frozen=True)
class Case:
    """One fault of a family: the experiment that runs it and its arguments."""

    family: str
    kind: str
    experiment: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def budgets(self) -> dict[str, Any]:
        """The budgets of the experiment's own ``@pytest.mark.chaos``."""
        marks = getattr(self.experiment, "pytestmark", [])
        return next(dict(m.kwargs) for m in marks if m.name == "chaos")

    def run(self, chaos: Any) -> None:
        self.experiment(chaos, *self.args)


def parametrized(experiment: Callable[..., Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """(id, arguments) of each case of a ``@pytest.mark.parametrize``-d experiment, as
    pytest would make them (the experiment's own ids, else the values themselves)."""
    mark = next(m for m in getattr(experiment, "pytestmark", []) if m.name == "parametrize")
    values = list(mark.args[1])
    ids = mark.kwargs.get("ids")
    names = [str(i) for i in ids] if ids is not None else [str(v) for v in values]
    return [(name, (value,)) for name, value in zip(names, values, strict=True)]


def cases(stack: Any) -> dict[str, list[Case]]:
    """Every soak fault, by family, for *stack*: each case of the experiments of the
    suite and of ``experiments/`` that inject it (kill and hang: per replica)."""
    serving = [Case("serving", f"{verb} {replica}", run, (replica,))
               for verb, run in (("kill", test_serving.test_kill_replica),
                                 ("hang", test_serving.test_hang_replica))
               for replica in stack.replicas]  # fmt: skip

    def each(family: str, experiment: Callable[..., Any], prefix: str = "") -> list[Case]:
        return [Case(family, prefix + name, experiment, args)
                for name, args in parametrized(experiment)]  # fmt: skip

    checkpoints = [Case("checkpoint", "bit-flip-checkpoint",
                        test_checkpoints.test_checkpoint_damage_then_trainer_crash)]  # fmt: skip
    return {
        "serving": serving,
        "link": each("link", test_links.test_primary_link_fails_over)
        + each("link", test_network.test_degraded_replica_link_fails_over),
        "model-store": each("model-store", test_model_store.test_newest_version_damage)
        + each("model-store", test_corruption.test_model_store_damage),
        "checkpoint": checkpoints
        + each("checkpoint", test_corruption.test_checkpoint_damage_then_trainer_crash),
        "dr-site": each("dr-site",
                        test_dr_site.test_dr_site_partition_queues_backups_and_resumes,
                        prefix="dr-site-"),  # fmt: skip
    }


def soak_faults(families: dict[str, list[Case]]) -> st.SearchStrategy[Any]:
    """A case of every family, the fault's seed and the gap after it.

    The family itself is not drawn but taken in turn (see :func:`test_soak`): hypothesis
    mutates the examples it has already run, so a drawn family repeats for several
    faults in a row, and a short soak could miss a whole family.
    """
    per_family = st.fixed_dictionaries({f: st.sampled_from(c) for f, c in families.items()})
    return st.tuples(per_family, st.integers(0, 2**31 - 1), st.integers(*GAPS))


def test_soak(chaos_experiments: Any, chaos_stack: Any, request: pytest.FixtureRequest) -> None:
    duration = parse_duration(os.environ.get(DURATION_ENV, "60"), what=DURATION_ENV)
    seed = request.config.getoption("chaos_seed") or 0
    families = cases(chaos_stack)
    order = sorted(families)
    failures: list[str] = []
    done: list[str] = []
    streak = [0]
    deadline = time.monotonic() + duration

    @hypothesis_seed(seed)
    @settings(
        max_examples=int(duration / SHORTEST_FAULT) + 10,
        deadline=None,
        phases=[Phase.generate],  # no shrinking, no replay: each example is a live fault
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=soak_faults(families))
    def soak(drawn: tuple[dict[str, Case], int, int]) -> None:
        # never raises: hypothesis would re-run a failing example to report it
        if time.monotonic() >= deadline or streak[0] >= MAX_CONSECUTIVE_FAILURES:
            return
        per_family, fault_seed, gap = drawn
        case = per_family[order[len(done) % len(order)]]  # every family in turn
        label = f"{len(done):03d} {case.kind} seed={fault_seed}"
        done.append(label)
        experiment = chaos_experiments(label, seed=fault_seed, budgets=case.budgets())
        try:
            with experiment as chaos:
                case.run(chaos)
        except Exception as e:  # the row says why; the soak goes on
            failures.append(f"{label}: {type(e).__name__}: {e}")
            streak[0] += 1
            try:  # a start that raised left the window open (a no-op once it is closed)
                experiment.finish("error", error=e)
            except Exception as again:
                failures.append(f"{label}: could not finish: {again}")
            experiment.journal.record("soak.failed", name=experiment.name,
                                      type=type(e).__name__, message=str(e))  # fmt: skip
        else:
            streak[0] = 0
        time.sleep(gap)  # undisturbed steady state between faults, as drawn

    soak()
    if streak[0] >= MAX_CONSECUTIVE_FAILURES:
        failures.append(f"stopped after {MAX_CONSECUTIVE_FAILURES} failed faults in a row")
    assert done, "no fault was run"
    assert not failures, f"{len(failures)} of {len(done)} faults failed:\n" + "\n".join(failures)
