"""Cleanup after an interrupted run, and one clear message for each kind of bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from docker_support import NOTHING_LEFT, docker_client, engine_or_skip, http_spec  # noqa: F401

from chaoskit.errors import BackendError
from chaoskit.stack.docker import DockerBackend, project_name
from chaoskit.stack.docker_engine import connect, managed_objects
from chaoskit.stack.docker_image import ensure_image
from chaoskit.stack.service import ServiceSpec

pytestmark = [pytest.mark.integration, pytest.mark.docker]
engine_or_skip()


INTERRUPTED_RUN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from docker_support import http_spec
    from chaoskit.stack.docker import DockerBackend
    backend = DockerBackend(sys.argv[1], sys.argv[2])
    backend.start(http_spec("web"))
    backend.start(http_spec("other"))
    backend.pause("other")
    print(backend.project, flush=True)
    time.sleep(120)
    """
)


def test_the_next_backend_removes_what_an_interrupted_run_left(docker_client, tmp_path):  # noqa: F811
    here = os.path.dirname(__file__)
    owner = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_RUN, str(tmp_path / "run"), str(tmp_path / "data"),
         here],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        project = owner.stdout.readline().strip()
        assert project, "the interrupted run did not start its stack"
        left = managed_objects(docker_client, project=project)
        assert len(left["containers"]) == 2 and len(left["networks"]) == 1
        assert len(left["volumes"]) == 4
        os.kill(owner.pid, signal.SIGKILL)  # no finalizer, no atexit: everything stays
        owner.wait(10)
        assert len(managed_objects(docker_client, project=project)["containers"]) == 2
        backend = DockerBackend(tmp_path / "next-run", tmp_path / "data")
        try:
            assert len(backend.reaped) >= 7  # 2 containers, the network, 4 volumes
            assert managed_objects(docker_client, project=project) == NOTHING_LEFT
        finally:
            backend.close()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_objects_of_a_live_owner_are_left_alone(docker_client, tmp_path):  # noqa: F811
    first = DockerBackend(tmp_path / "a", tmp_path / "data")
    try:
        first.start(http_spec())
        second = DockerBackend(tmp_path / "b", tmp_path / "data")
        second.close()
        assert first.status("web") == "running"
    finally:
        first.close()
    assert managed_objects(docker_client, project=first.project) == NOTHING_LEFT


def test_no_engine_names_the_url(tmp_path):
    with pytest.raises(BackendError, match=r"no Docker engine answers at unix:///nonexistent.sock"):
        DockerBackend(tmp_path / "run", tmp_path / "data", base_url="unix:///nonexistent.sock")


def test_a_missing_image_is_named(docker_client, tmp_path):  # noqa: F811
    backend = DockerBackend(tmp_path / "run", tmp_path / "data", image="chaoskit-no-such:1")
    try:
        with pytest.raises(BackendError, match=r"image 'chaoskit-no-such:1' is not on the Docker"):
            backend.start(http_spec())
    finally:
        backend.close()


def test_a_name_taken_by_a_foreign_container_is_refused_and_kept(docker_client, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    name = f"{project_name(run_dir.absolute())}-web"
    foreign = docker_client.api.create_container(ensure_image(docker_client), ["true"], name=name)
    try:
        backend = DockerBackend(run_dir, tmp_path / "data")
        try:
            with pytest.raises(BackendError, match=rf"container '{name}' already exists and "
                               "chaoskit does not own it"):
                backend.start(http_spec())
        finally:
            backend.close()
        assert docker_client.api.inspect_container(foreign["Id"])["Name"] == f"/{name}"
    finally:
        docker_client.api.remove_container(foreign["Id"], force=True)


def test_a_network_name_taken_by_a_foreign_network_is_refused(docker_client, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    foreign = docker_client.api.create_network(project_name(run_dir.absolute()))
    try:
        backend = DockerBackend(run_dir, tmp_path / "data")
        try:
            with pytest.raises(BackendError, match=r"network .* chaoskit does not own it"):
                backend.start(ServiceSpec(name="x", command=("true",)))
        finally:
            backend.close()
    finally:
        docker_client.api.remove_network(foreign["Id"])


def test_connect_error_is_a_backend_error_naming_the_url():
    with pytest.raises(BackendError, match="tcp://127.0.0.1:1"):
        connect("tcp://127.0.0.1:1", timeout=2)
