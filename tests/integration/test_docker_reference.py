"""The reference stack (TensorFlow trainer and model server) in containers, end to end."""

from __future__ import annotations

import dataclasses

import pytest
from docker_support import NOTHING_LEFT, docker_client, engine_or_skip  # noqa: F401

from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.steady_state import check_steady_state
from chaoskit.journal import read_journal
from chaoskit.stack.docker import DockerBackend
from chaoskit.stack.docker_engine import managed_objects
from chaoskit.stack.reference import SERVING, TRAINER, ReferenceStack, StackConfig
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]
engine_or_skip()


def test_reference_stack_serves_recovers_and_leaves_nothing(docker_client, tmp_path):  # noqa: F811
    backend = DockerBackend(tmp_path / "run", tmp_path / "data")
    stack = ReferenceStack(backend, tmp_path / "data", tmp_path / "run" / "journal.jsonl",
                           StackConfig(start_timeout=120, replicas=1))
    for name in stack.replicas:
        spec = stack.specs[name]
        if "--host" not in spec.command:  # until reference.py passes --host {bind_host}
            stack.specs[name] = dataclasses.replace(
                spec, command=(*spec.command, "--host", "{bind_host}"))
    with stack:
        goldens = Goldens(stack.model_base_path)
        client = stack.direct_client(SERVING, timeout=2.0)
        wait_until(lambda: check_steady_state(client, goldens).ok, 60, what="canary correct")
        first = backend.instance(SERVING)
        backend.kill(SERVING)
        wait_until(lambda: backend.status(SERVING) == "exited", 10, what="serving exits")
        assert stack.ensure_running() == [SERVING] and backend.instance(SERVING) != first
        wait_until(lambda: check_steady_state(client, goldens).ok, 60, what="canary after restart")
        assert backend.status(TRAINER) == "running"
    events = read_journal(stack.journal_path)
    sources = {e["source"] for e in events}
    assert {"trainer", "serving"} <= sources  # the containers wrote to the host's journal
    assert [e["event"] for e in events].count("serving.started") == 2
    left = managed_objects(docker_client, project=backend.project)
    assert left == NOTHING_LEFT
