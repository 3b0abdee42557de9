"""Attach and observe on Docker: a stack file names a serving container the user started
(with a restart policy), and chaoskit measures the platform's own recovery.

With ``recovery = "observe"`` chaoskit only detects: a kill is recovered by Docker's
restart policy (the report says ``platform``), a hang is recovered by nothing, and the
experiment fails saying so.  With ``recovery = "chaoskit"`` the DR engine restarts the
hung container itself.  Nothing the user started is removed, and it is left running.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from docker_support import docker_client, engine_or_skip  # noqa: F401

from chaoskit.stack.docker_image import ensure_image, host_paths
from chaoskit.stack.ports import allocate_ports

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]
engine_or_skip()

INNER = 8501

EXPERIMENTS = """
import pytest
from chaoskit.faults import HangService, KillService

@pytest.mark.chaos(ttd="2s", rto="30s")
def test_kill(chaos):
    chaos.run(KillService("serving"))

@pytest.mark.chaos(ttd="2s", rto="30s")
def test_hang(chaos):
    chaos.run(HangService("serving"), timeout=20)
"""


@pytest.fixture
def user_serving(docker_client, tmp_path):  # noqa: F811
    """chaoskit's model server in a container of the user's, restart policy ``always``."""
    from docker.types import Mount

    models = tmp_path / "models" / "mine"
    # in a subprocess: pytester restores sys.modules after the test, and TensorFlow
    # imported here would then be imported a second time by a later test (which aborts)
    subprocess.run([sys.executable, "-c", "import sys; from chaoskit.model import build_model, "
                    "export_saved_model as e; e(build_model(seed=2), sys.argv[1], 1, 1)",
                    str(models)], check=True, timeout=120)  # fmt: skip
    api = docker_client.api
    port = allocate_ports("user-serving", {"rest": 0})["rest"]
    name = f"user-serving-{tmp_path.name[-12:].lower().replace('_', '-')}"
    host_config = api.create_host_config(
        init=True, port_bindings={INNER: ("127.0.0.1", port)},
        restart_policy={"Name": "always"},
        mounts=[*(Mount(p, p, type="bind", read_only=True) for p in host_paths()),
                Mount(str(models.parent), str(models.parent), type="bind")],
    )  # fmt: skip
    container = api.create_container(
        ensure_image(docker_client),
        [sys.executable, "-m", "chaoskit.serving", "--model-name", "mine", "--model-base-path",
         str(models), "--rest-port", str(INNER), "--host", "0.0.0.0", "--poll-interval", "0.5"],
        name=name, ports=[INNER], host_config=host_config, environment={"HOME": "/tmp"},
        user="0:0",
    )  # fmt: skip
    api.start(container["Id"])
    yield {"id": container["Id"], "name": name, "models": models}
    api.remove_container(container["Id"], force=True)


def stack_file(where: Path, serving: dict, recovery: str) -> Path:
    path = where / "chaoskit.toml"
    path.write_text(textwrap.dedent(f"""
        [model]
        name = "mine"
        base_path = "{serving['models']}"

        [services.serving]
        role = "serving"
        attach = {{ container = "{serving['name']}" }}
        ports = {{ rest = {INNER} }}
        readiness = {{ model_status = true, timeout = "60s" }}

        [dr]
        recovery = "{recovery}"
        recovery_timeout = "15s"
    """))
    return path


def run(pytester: pytest.Pytester, serving: dict, recovery: str) -> dict[str, dict[str, str]]:
    pytester.makepyfile(test_user=EXPERIMENTS)
    path = stack_file(pytester.path, serving, recovery)
    result = pytester.runpytest_subprocess(f"--chaos-stack={path}", "--chaos-backend=docker",
                                           "-p", "no:randomly")  # fmt: skip
    with open(pytester.path / "reports" / "latest" / "results.csv", newline="") as f:
        rows = {row["name"].split("::")[-1]: row for row in csv.DictReader(f)}
    rows["_outcome"] = {"ret": str(result.ret), "out": result.stdout.str()[-3000:]}
    return rows


def test_observe_measures_the_platform_and_chaoskit_recovers_itself(
    pytester: pytest.Pytester, user_serving: dict, docker_client  # noqa: F811
) -> None:
    observed = run(pytester, user_serving, "observe")
    kill, hang = observed["test_kill"], observed["test_hang"]
    assert kill["verdict"] == "pass", observed["_outcome"]
    assert kill["recovered_by"] == "platform" and float(kill["rto_s"]) > float(kill["ttd_s"])
    assert hang["verdict"] == "fail" and hang["ttd_s"] and not hang["rto_s"]
    assert "nothing recovered serving" in hang["reasons"], hang["reasons"]

    state = docker_client.api.inspect_container(user_serving["id"])["State"]
    assert state["Running"] and not state["Paused"], "the hang was not undone"

    repaired = run(pytester, user_serving, "chaoskit")
    for name in ("test_kill", "test_hang"):
        row = repaired[name]
        assert row["verdict"] == "pass", repaired["_outcome"]
        assert row["recovered_by"] == "chaoskit (restart)"
    info = docker_client.api.inspect_container(user_serving["id"])
    assert info["State"]["Running"], "the user's container was not left running"
