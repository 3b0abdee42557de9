"""Pure parts of the Docker backend: names, state mapping, owners, the image's root fs."""

from __future__ import annotations

import io
import os
import socket
import tarfile
from pathlib import Path

import docker.errors
import pytest
import requests

from chaoskit.errors import BackendError, ConfigError
from chaoskit.stack import docker_engine, docker_image
from chaoskit.stack.docker import container_status, instance_of, project_name


def state(**kw):
    return {"Id": "0123456789abcdef", "State": {"Running": False, "Paused": False, **kw}}


def test_state_mapping():
    assert container_status(None) == "absent"
    assert container_status(state(Running=True, Pid=5)) == "running"
    assert container_status(state(Running=True, Paused=True)) == "paused"
    assert container_status(state(Running=True, Restarting=True)) == "exited"
    assert container_status(state(Status="created")) == "exited"


def test_instance_changes_with_the_process_and_is_none_when_nothing_runs():
    assert instance_of(state(Running=True, Pid=5)) == "0123456789ab:5"
    assert instance_of(state(Running=True, Pid=6)) != instance_of(state(Running=True, Pid=5))
    assert instance_of(state(Pid=0)) is None and instance_of(None) is None


def test_project_name_is_docker_safe_and_unique_per_directory(tmp_path):
    a, b = project_name(tmp_path / "a" / "Run 1"), project_name(tmp_path / "b" / "Run 1")
    assert a.startswith("chaoskit-run-1-") and a != b
    assert project_name(tmp_path / "a" / "Run 1") == a


def test_owner_alive_tells_a_dead_or_reused_pid_from_a_live_one():
    me = docker_engine.owner_label()
    assert docker_engine.owner_alive(me)
    host, pid, _ = me.rsplit(":", 2)
    assert not docker_engine.owner_alive(f"{host}:{pid}:1")  # same pid, other start time
    assert docker_engine.owner_alive("other-host:1:1")  # not ours to judge
    assert docker_engine.owner_alive("garbage")
    assert not docker_engine.owner_alive(f"{socket.gethostname()}:{2**22 + 7}:None")


def test_rootfs_is_deterministic_and_keeps_sbin_a_real_directory():
    assert docker_image.rootfs_tar() == docker_image.rootfs_tar()
    with tarfile.open(fileobj=io.BytesIO(docker_image.rootfs_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["sbin"].isdir()  # Docker mounts its init at /sbin/docker-init
    assert members["tmp"].mode == 0o1777 and "etc/passwd" in members
    for name in ("bin", "lib", "lib64"):
        if os.path.islink(f"/{name}"):
            assert members[name].issym() and members[name].linkname == os.readlink(f"/{name}")
    assert docker_image.image_tag().startswith("chaoskit-hostenv:")


def test_host_paths_cover_the_interpreter_without_nesting():
    paths = docker_image.host_paths()
    assert "/usr" in paths
    for p in paths:
        assert not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)
    python = os.path.realpath(os.sys.executable)
    assert any(python.startswith(p + "/") for p in paths)
    assert any(str(Path(docker_image.chaoskit.__file__).resolve()).startswith(p) for p in paths)


@pytest.mark.parametrize(
    ("error", "match"),
    [
        (docker.errors.NotFound("No such container: x"), r"stopping 'x': not found"),
        (docker.errors.APIError("409 Conflict"), r"stopping 'x': the Docker engine refused"),
        (requests.exceptions.ConnectionError("reset"), r"stopping 'x': Docker engine unreachable"),
    ],
)
def test_engine_errors_become_backend_errors_naming_the_operation(error, match):
    with pytest.raises(BackendError, match=match) as info:
        with docker_engine.engine_errors("stopping 'x'"):
            raise error
    assert info.value.__cause__ is error


def test_bad_restart_mode_is_a_config_error(tmp_path):
    from chaoskit.stack.docker import DockerBackend

    with pytest.raises(ConfigError, match="restart_mode 'sometimes'"):
        DockerBackend(tmp_path / "r", tmp_path / "d", restart_mode="sometimes")
