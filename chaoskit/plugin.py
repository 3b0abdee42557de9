"""The chaoskit pytest plugin (registered through the ``pytest11`` entry point).

Marker ``@pytest.mark.chaos(ttd=..., rto=..., rpo=...)`` sets an experiment's budgets;
``@pytest.mark.chaos_learned(baseline="30s")`` (or ``--chaos-learned`` for all) adds the
learned detectors, trained on the experiment's own steady state;
fixture ``chaos`` gives the running :class:`~chaoskit.experiment.Experiment`, and
``chaos_stack`` the shared reference stack (started once per session, because a
TensorFlow process takes seconds to start).  Each run writes ``<report-dir>/<run-id>/``
(journal, results, report) and points ``<report-dir>/latest`` at it.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from chaoskit.errors import ChaosKitError, ConfigError
from chaoskit.objectives import NAMES, Objectives
from chaoskit.run_state import RunState
from chaoskit.stack.backend import BACKENDS

STATE = pytest.StashKey[RunState]()
CALL_OUTCOME = pytest.StashKey[str]()
CALL_ERROR = pytest.StashKey[BaseException]()
"""What the test body of a failed test raised, for the experiment's journal."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaoskit", "chaos and disaster-recovery experiments")
    group.addoption("--chaos-backend",
                    help="where the stack runs: process (default), docker or swarm")
    group.addoption(
        "--chaos-stack",
        metavar="PATH",
        help="stack file (chaoskit.toml) describing the stack under test "
        "(default: chaoskit's reference stack)",
    )
    group.addoption("--chaos-swarm-workers", type=int, default=0, metavar="N",
                    help="swarm backend: add N worker nodes on this machine for the run "
                    "(node-loss experiments need one)")  # fmt: skip
    group.addoption("--chaos-swarm-healthcheck", metavar="DURATION",
                    help="swarm backend: give every task a Docker health check this often "
                    "(e.g. 30s, Docker's default; default: none, as Swarm's)")  # fmt: skip
    group.addoption("--chaos-swarm-spares", type=int, default=0, metavar="N",
                    help="swarm backend: run N warm serving tasks beyond the replicas; a "
                    "replica whose node is lost moves to one at once (default: 0)")  # fmt: skip
    group.addoption("--chaos-report-dir", help="directory for run reports (default: reports)")
    group.addoption("--chaos-seed", type=int, help="seed for the faults' random choices")
    group.addoption(
        "--chaos-examples",
        type=int,
        default=3,
        help="examples each property-based experiment draws (default 3; more is slower)",
    )
    group.addoption(
        "--chaos-learned",
        action="store_true",
        help="learned detectors in every experiment (each first records a steady-state "
        "baseline: ini chaos_learned_baseline, default 30s)",
    )
    parser.addini("chaos_backend", "default backend: process, docker or swarm", default="process")
    parser.addini("chaos_stack", "stack file of the stack under test (relative to rootdir)")
    parser.addini(
        "chaos_learned_baseline", "steady state the learned detectors train on", default="30s"
    )
    parser.addini("chaos_report_dir", "directory for run reports", default="reports")
    for name in NAMES:
        parser.addini(f"chaos_{name}", f"default {name.upper()} budget (e.g. 30s)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos(ttd=None, rto=None, rpo=None): a chaos experiment with its recovery budgets "
        "(seconds or strings like '500ms', '30s', '5m')",
    )
    config.addinivalue_line(
        "markers",
        "chaos_needs(*roles): skip this experiment, saying why, when the stack under test "
        "lacks one of: trainer, checkpoints, dr-site, replicas>=2, proxies, quality-gate, "
        "checkpoint-volume",
    )
    config.addinivalue_line(
        "markers",
        "chaos_learned(baseline=None): learned detectors in this experiment, trained on "
        "its steady state for `baseline` (default: ini chaos_learned_baseline)",
    )
    config.addinivalue_line(
        "markers",
        "chaos_quality(margin=0.5, min_samples=1000, floor=None): clients predict on the "
        "'stable' label, and every new model version must pass chaoskit's quality gate on "
        "the stack's labelled set before it moves there",
    )
    backend = config.getoption("chaos_backend") or config.getini("chaos_backend") or "process"
    if backend not in BACKENDS:
        choices = ", ".join(BACKENDS)
        raise pytest.UsageError(
            f"--chaos-backend: unknown backend {backend!r} (choose from: {choices})"
        )
    report_dir = config.getoption("chaos_report_dir") or config.getini("chaos_report_dir")
    try:
        defaults = Objectives.parse(
            {n: config.getini(f"chaos_{n}") for n in NAMES if config.getini(f"chaos_{n}")},
            where="ini option chaos_*",
        )
        # a setting of the whole session: a bad one is a usage error, not one per test
        _baseline_seconds(config.getini("chaos_learned_baseline"), "ini option chaos_learned")
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from e
    seed = config.getoption("chaos_seed")
    stack_file = _stack_file(config)
    if stack_file is not None:
        from chaoskit.stackfile import load_stack_file

        try:
            budgets = load_stack_file(stack_file).budgets
        except ConfigError as e:
            raise pytest.UsageError(str(e)) from e
        stack_budgets = Objectives(ttd=budgets.ttd, rto=budgets.rto, rpo=budgets.rpo)
        defaults = stack_budgets.merged_over(defaults)
    config.stash[STATE] = RunState(
        backend=backend,
        swarm=_swarm_options(config),
        report_dir=Path(config.rootpath, report_dir)
        if not os.path.isabs(report_dir)
        else Path(report_dir),
        seed=seed if seed is not None else secrets.randbelow(2**31),
        defaults=defaults,
        stack_file=stack_file,
    )


def _stack_file(config: pytest.Config) -> Path | None:
    """``--chaos-stack`` (relative to the working directory) or ini ``chaos_stack``
    (relative to rootdir); None for the reference stack."""
    given = config.getoption("chaos_stack")
    if given:
        return Path(given).absolute()
    ini = config.getini("chaos_stack")
    return Path(config.rootpath, ini) if ini else None


def _objectives(item: pytest.Item) -> Objectives:
    marker = item.get_closest_marker("chaos")
    state = item.config.stash[STATE]
    if marker is None:
        return state.defaults
    if marker.args:
        raise ConfigError(
            f"{item.nodeid}: @pytest.mark.chaos takes keyword budgets only (ttd=, rto=, rpo=)"
        )
    return Objectives.parse(marker.kwargs, where=f"{item.nodeid}: @pytest.mark.chaos").merged_over(
        state.defaults
    )


def _declared(item: pytest.Item) -> tuple[str, ...]:
    """The budgets the item's own marker sets (the others come from defaults)."""
    marker = item.get_closest_marker("chaos")
    return tuple(k for k in NAMES if marker is not None and marker.kwargs.get(k) is not None)


def _learned_baseline(item: pytest.Item) -> float | None:
    """Seconds of baseline for the learned detectors, or None when the item does not opt in."""
    marker = item.get_closest_marker("chaos_learned")
    if marker is None and not item.config.getoption("chaos_learned"):
        return None
    where = f"{item.nodeid}: @pytest.mark.chaos_learned"
    if marker is not None and (marker.args or set(marker.kwargs) - {"baseline"}):
        raise ConfigError(f"{where} takes one keyword only: baseline=")
    value = (marker.kwargs.get("baseline") if marker else None) or item.config.getini(
        "chaos_learned_baseline"
    )
    return _baseline_seconds(value, where)


def _quality(item: pytest.Item) -> Any:
    """The item's quality targets (``chaos_quality``), or None when it has no gate."""
    marker = item.get_closest_marker("chaos_quality")
    if marker is None:
        return None
    from chaoskit.dr.online.quality_targets import QualityTargets

    where = f"{item.nodeid}: @pytest.mark.chaos_quality"
    if marker.args:
        raise ConfigError(f"{where} takes keywords only (margin=, min_samples=, floor=)")
    return QualityTargets.parse(dict(marker.kwargs), where=where)


def _baseline_seconds(value: Any, where: str) -> float:
    from chaoskit.durations import parse_duration

    baseline = parse_duration(value, what=f"{where} baseline={value!r}")
    if baseline < 10:
        raise ConfigError(f"{where} baseline={value!r}: needs at least 10s (10 windows of 1s)")
    return baseline


MARKER_ERROR = pytest.StashKey[str]()
"""Why an item's chaos markers are unusable, found at collection; the item errors at setup."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every chaos marker at collection, so a typo fails before any stack starts.

    A bad marker fails only its own test (see :func:`pytest_runtest_setup`): one typo in
    one experiment must not cost the session all the others.
    """
    for item in items:
        try:
            _objectives(item)
            _learned_baseline(item)
            _quality(item)
            _skip_unless_stack_has(item)
        except ConfigError as e:
            item.stash[MARKER_ERROR] = str(e)


def _swarm_options(config: pytest.Config) -> Any:
    """The swarm options (a usage error names a bad one)."""
    from chaoskit.durations import parse_duration
    from chaoskit.stack.swarm_mode import SwarmOptions

    workers = config.getoption("chaos_swarm_workers")
    if not 0 <= workers <= 8:
        raise pytest.UsageError(f"--chaos-swarm-workers: {workers} is not 0..8")
    every = config.getoption("chaos_swarm_healthcheck")
    try:
        seconds = None if every is None else parse_duration(every, what="")
    except ConfigError as e:
        raise pytest.UsageError(f"--chaos-swarm-healthcheck: {e}") from e
    if seconds is not None and seconds < 0.1:
        raise pytest.UsageError(f"--chaos-swarm-healthcheck: {every!r} is less than 100ms")
    spares = config.getoption("chaos_swarm_spares")
    if not 0 <= spares <= 4:
        raise pytest.UsageError(f"--chaos-swarm-spares: {spares} is not 0..4")
    return SwarmOptions(workers=workers, healthcheck=seconds, spares=spares)


def _plan(config: pytest.Config) -> Any:
    """The stack's plan (roles, replica names), read once without starting anything."""
    state = config.stash[STATE]
    if state.plan is None:
        from chaoskit.stack.plan import plan_stack

        state.plan = plan_stack(state.stack_file, backend=state.backend,
                                nodes=1 + (state.swarm.workers if state.swarm else 0))  # fmt: skip
    return state.plan


def _skip_unless_stack_has(item: pytest.Item) -> None:
    """``@pytest.mark.chaos_needs("trainer", ...)``: skip, naming what the stack lacks."""
    marker = item.get_closest_marker("chaos_needs")
    needs = () if marker is None else tuple(marker.args)
    if item.get_closest_marker("chaos_quality") is not None:
        needs = (*needs, "quality-gate")
    if not needs:
        return
    from chaoskit.stack.protocol import missing_roles

    lacking = missing_roles(_plan(item.config), needs)
    if lacking:
        which = item.config.stash[STATE].stack_file or "the reference stack"
        item.add_marker(pytest.mark.skip(reason=f"{which} lacks {'; '.join(lacking)}"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``chaos_replica``: one experiment per serving replica of the stack under test."""
    if "chaos_replica" in metafunc.fixturenames:
        metafunc.parametrize("chaos_replica", _plan(metafunc.config).replicas)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """An item with a bad chaos marker errors here, before its fixtures (no stack starts),
    with the message alone: it is the user's mistake, not chaoskit's, so no traceback."""
    error = item.stash.get(MARKER_ERROR, None)
    if error is not None:
        pytest.fail(f"bad chaos marker: {error}", pytrace=False)


@pytest.fixture(scope="session")
def chaos_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The stack under test (the stack file's, or the reference stack) with its store
    guard and, when it has a DR site, the replicator; shared by the session's experiments."""
    state = request.config.stash[STATE]
    state.open_journal()
    data_dir = tmp_path_factory.mktemp("chaoskit-stack")
    try:
        _start_stack(state, data_dir)
    except ChaosKitError as e:
        state.run_cleanups()
        pytest.fail(f"chaoskit could not start the stack: {e}", pytrace=False)
    try:
        yield state.stack
    finally:
        state.run_cleanups()


def _start_stack(state: RunState, data_dir: Path) -> None:
    """Start the stack, then its store guard and replicator; each registers its stopper."""
    from chaoskit.dr.protect.guard_keys import open_backup_repository, open_writer
    from chaoskit.dr.protect.replication import Replicator, SiteClient
    from chaoskit.dr.protect.site import read_token
    from chaoskit.dr.protect.store_guard import StoreGuard
    from chaoskit.stack.reference import ReferenceStack, StackConfig, make_backend

    stack: Any
    if state.stack_file is None:
        backend = make_backend(state.backend, state.run_dir, data_dir, swarm=state.swarm)
        stack = ReferenceStack(backend, data_dir, state.journal.path, StackConfig())
    else:
        from chaoskit.stackfile import load_stack_file
        from chaoskit.stackfile.stack import FileStack, make_file_backend

        file = load_stack_file(state.stack_file)
        backend = make_file_backend(file, state.backend, state.run_dir, data_dir,
                                    where=str(state.stack_file), swarm=state.swarm)  # fmt: skip
        try:
            stack = FileStack(file, backend, data_dir, state.journal.path,
                              path=state.stack_file, seed=state.seed)  # fmt: skip
        except BaseException:
            backend.close()
            raise
    state.stack = stack
    state.cleanups.append(stack.close)
    stack.start()
    state.journal.record("stack.started", **stack.describe())
    repo = open_backup_repository(stack.repository, password_file=stack.password_file)
    writer = open_writer(repo, stack.writer_password_file)
    site = None
    if stack.dr_site is not None:
        site = SiteClient(stack.dr_site_endpoint, read_token(stack.dr_site_token_file))
    shipping = threading.Lock()  # the replicator's passes; the guard's repository swap
    guard = StoreGuard(repo, stack, state.journal, repair=stack.recovery == "chaoskit",
                       writer=writer, offsite=site, repository_lock=shipping)  # fmt: skip
    state.cleanups.append(guard.stop)
    guard.start()
    state.session_loops.append(guard)
    state.store_guard = guard
    if site is not None:
        replicator = Replicator(writer, site, state.journal, repository_lock=shipping)
        state.cleanups.append(replicator.stop)
        replicator.start()
        state.session_loops.append(replicator)


def _new_experiment(
    request: pytest.FixtureRequest, stack: Any, name: str, seed: int,
    budgets: Mapping[str, Any] | None = None,
) -> Any:  # fmt: skip
    """An experiment of the running item; *budgets* (``{"rto": "3s"}``) override the
    item's marker for this experiment alone."""
    from chaoskit.experiment import Experiment

    state = request.config.stash[STATE]
    item = request.node
    objectives, declared = _objectives(item), _declared(item)
    if budgets:
        own = Objectives.parse(budgets, where=f"{name}: budgets")
        objectives = own.merged_over(objectives)
        declared = (*declared, *(k for k in NAMES if budgets.get(k) is not None))
    return Experiment(
        name,
        stack,
        state.open_journal(),
        objectives,
        backend=state.backend,
        seed=seed,
        record_property=lambda key, value: item.user_properties.append((key, value)),
        fresh_recovery_point=True,
        progress=_progress_writer(request.config),
        learned_baseline=_learned_baseline(item),
        quality=_quality(item),
        store_guard=state.store_guard,
        declared=tuple(dict.fromkeys(declared)),
        session_loops=state.session_loops,
    )


def _progress_writer(config: pytest.Config) -> Callable[[str], None] | None:
    """Progress lines for long experiments, on a terminal only (CI logs stay quiet)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not reporter.isatty:
        return None
    return lambda text: reporter.write_line(f"  chaoskit: {text}", cyan=True)


@pytest.fixture
def chaos(request: pytest.FixtureRequest, chaos_stack: Any) -> Iterator[Any]:
    """A started experiment named after the test; faults injected through it always revert."""
    item = request.node
    experiment = _new_experiment(
        request, chaos_stack, item.nodeid, request.config.stash[STATE].seed
    )
    item.stash[EXPERIMENT] = experiment
    request.config.stash[STATE].cleanups.append(lambda: experiment.finish("interrupted"))
    try:
        experiment.start()
    except ChaosKitError as e:
        experiment.finish("error", error=e)
        pytest.fail(str(e), pytrace=False)
    try:
        yield experiment
    finally:
        experiment.finish(
            item.stash.get(CALL_OUTCOME, "interrupted"), error=item.stash.get(CALL_ERROR, None)
        )


@pytest.fixture
def chaos_experiments(request: pytest.FixtureRequest, chaos_stack: Any) -> Iterator[Any]:
    """A factory of experiments for tests that run several (one per hypothesis example).

    ``with chaos_experiments("label", seed=7) as experiment: experiment.run(fault)``;
    each is its own row in the report, named ``<test id>[label]``.  ``budgets={"ttd":
    "2s", "rto": "3s"}`` gives one experiment budgets of its own (a test that draws
    faults of several kinds: each is held to its kind's budget), over the marker's.
    """
    created: dict[Any, Callable[[], None]] = {}  # unfinished experiment -> its cleanup
    state = request.config.stash[STATE]

    def forget_finished() -> None:
        """A finished experiment holds its journal window, loops and tracker: a test that
        runs hundreds (the soak) must not keep them all until the session ends."""
        for experiment, cleanup in list(created.items()):
            if experiment.finished:
                del created[experiment]
                if cleanup in state.cleanups:
                    state.cleanups.remove(cleanup)

    def factory(
        label: str, *, seed: int | None = None, budgets: Mapping[str, Any] | None = None
    ) -> Any:
        forget_finished()
        name = f"{request.node.nodeid}[{label}]"
        experiment = _new_experiment(
            request, chaos_stack, name, state.seed if seed is None else seed, budgets
        )
        created[experiment] = lambda: experiment.finish("interrupted")
        state.cleanups.append(created[experiment])
        return experiment

    yield factory
    forget_finished()
    for experiment in list(created):  # those the test did not finish (no ``with`` block)
        experiment.finish(
            request.node.stash.get(CALL_OUTCOME, "interrupted"),
            error=request.node.stash.get(CALL_ERROR, None),
        )


@pytest.fixture
def chaos_examples(request: pytest.FixtureRequest) -> int:
    """How many examples property-based experiments draw (--chaos-examples, default 3)."""
    return int(request.config.getoption("chaos_examples"))


EXPERIMENT = pytest.StashKey[Any]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After a passing experiment body, verify its budgets unless the test already did."""
    result = yield
    experiment = item.stash.get(EXPERIMENT, None)
    if experiment is not None and experiment.result is None:
        experiment.verify()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_OUTCOME] = report.outcome
        if report.failed and call.excinfo is not None:
            item.stash[CALL_ERROR] = call.excinfo.value
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what still runs, write the report (even when a cleanup raised or was
    interrupted), and fail the session when a cleanup failed."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    passing = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    try:
        state.run_cleanups()  # normally done by fixture teardown; not after a Ctrl-C
    except KeyboardInterrupt:
        # raising here would skip the report and the summary (and pytest's unconfigure):
        # the session is ending anyway, so the Ctrl-C only decides the exit status
        if session.exitstatus in (*passing, pytest.ExitCode.TESTS_FAILED):
            session.exitstatus = pytest.ExitCode.INTERRUPTED
    except BaseException:
        pass  # pytest.fail(), SystemExit in a cleanup: in cleanup_failures, see below
    if state.cleanup_failures and session.exitstatus in passing:
        # the tests passed, yet something chaoskit started may still run: not a pass.  A
        # worse status (tests failed, interrupted, internal or usage error) is kept.
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.journal is None:
        return
    state.journal.close()
    from chaoskit.report.results import point_latest, write_run_report

    state.results = write_run_report(state.run_dir)
    point_latest(state.report_dir, state.run_dir)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.results:
        from chaoskit.report.results import SUMMARY_HEADERS, format_table, summary_rows

        terminalreporter.write_sep("=", "chaoskit experiments")
        for line in format_table(SUMMARY_HEADERS, summary_rows(state.results)):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"report: {state.run_dir / 'report.html'}")
    if state.cleanup_failures:
        terminalreporter.write_sep("=", "chaoskit cleanup failures", red=True)
        for failure in state.cleanup_failures:
            terminalreporter.write_line(f"cleanup failed: {failure}", red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.run_cleanups()
