"""What the Docker tests share: the engine check (skip, or fail under CI) and small helpers.

Without an engine the Docker tests skip with one reason.  With ``CHAOSKIT_REQUIRE_DOCKER=1``
(set by ``.ci/run`` once dockerd answers) a missing engine is a failure instead, so CI
cannot pass by skipping them.
"""

from __future__ import annotations

import os
import sys
import urllib.request

import pytest

from chaoskit.errors import BackendError
from chaoskit.stack import docker_engine, swarm_mode, swarm_nodes
from chaoskit.stack.service import Readiness, ServiceSpec

REQUIRE_ENV = "CHAOSKIT_REQUIRE_DOCKER"
NOTHING_LEFT = {"services": [], "containers": [], "networks": [], "volumes": [], "secrets": []}
"""What ``managed_objects`` finds once a run cleaned up after itself."""

_engine: object = None
_failure: str | None = None


def _connect() -> str | None:
    """Connect once per session; the failure message when no engine answers."""
    global _engine, _failure
    if _engine is None and _failure is None:
        from chaoskit.stack.docker_engine import connect

        try:
            _engine = connect(timeout=10)
        except BackendError as e:
            _failure = str(e)
    return _failure


def engine_or_skip() -> None:
    """Call at module level: skips the whole module, with one reason, when no engine
    answers, unless CHAOSKIT_REQUIRE_DOCKER=1 (then ``docker_client`` fails each test)."""
    failure = _connect()
    if failure is not None and os.environ.get(REQUIRE_ENV) != "1":
        pytest.skip(
            f"Docker tests need a Docker engine: {failure.split(' (')[0]}",
            allow_module_level=True,
        )


@pytest.fixture(scope="session")
def docker_client() -> object:
    """The connected docker client; a failure, not a skip, when none answers here."""
    failure = _connect()
    if failure is not None:
        pytest.fail(f"{REQUIRE_ENV}=1 but {failure}", pytrace=False)
    return _engine


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request: pytest.FixtureRequest) -> tuple[str, object]:
    """(backend, its engine), for a test that runs on both: set up before ``pytester``,
    whose sys.modules snapshot would otherwise drop the docker SDK imported later and
    break the session's client."""
    if request.param == "process":
        return "process", None
    engine_or_skip()  # skips without an engine, unless CI requires one
    return "docker", request.getfixturevalue("docker_client")


def http_spec(name: str = "web", port: int = 0, timeout: float = 20.0) -> ServiceSpec:
    """A tiny HTTP service (the venv's Python serving a directory) on all interfaces."""
    return ServiceSpec(
        name=name,
        command=(sys.executable, "-m", "http.server", "--bind", "0.0.0.0", "{port_rest}"),
        ports={"rest": port},
        readiness=Readiness(http_path="/", timeout=timeout),
        stop_timeout=2.0,
    )


def get(port: int, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as answer:
        return int(answer.status)


def answers(port: int) -> bool:
    try:
        return get(port, timeout=0.5) == 200
    except OSError:
        return False


def reap_killed_runs(client: object) -> None:
    """Remove what killed runs left on the engine (objects, added nodes, the swarm one of
    them initialised), as every swarm backend does as it starts: a test's "before" is the
    engine without them, whose state may outlive its runs (CI's did)."""
    docker_engine.reap_orphans(client)
    swarm_nodes.reap_orphan_nodes()
    swarm_mode.reap_orphan_swarm(client)
