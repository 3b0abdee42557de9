"""A stack file's service in an image of the user's, on the Docker backend: it runs with
the image's own command line given by ``docker.command``; an image the engine does not
have is one error naming the key, before anything starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from docker_support import docker_client, engine_or_skip  # noqa: F401

from chaoskit.errors import ConfigError
from chaoskit.journal import Journal
from chaoskit.model import build_model, export_saved_model
from chaoskit.stack.docker import DockerBackend
from chaoskit.stack.docker_engine import project_name
from chaoskit.stack.docker_image import ensure_image
from chaoskit.stackfile.stack import FileStack

pytestmark = [pytest.mark.integration, pytest.mark.docker]
engine_or_skip()


def stack_file(where: Path, image: str) -> Path:
    path = where / "chaoskit.toml"
    path.write_text(textwrap.dedent(f"""
        [model]
        name = "mine"
        base_path = "{{data_dir}}/models/mine"

        [services.serving]
        role = "serving"
        ports = {{ rest = 0 }}
        readiness = {{ model_status = true, timeout = "90s" }}
        [services.serving.docker]
        image = "{image}"
        command = ["{{python}}", "-m", "chaoskit.serving", "--model-name", "{{model_name}}",
                   "--model-base-path", "{{model_base_path}}", "--rest-port", "{{port_rest}}",
                   "--host", "{{bind_host}}"]
    """))
    return path


def test_a_users_image_serves_the_model(docker_client, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    export_saved_model(build_model(seed=3), data / "models" / "mine", version=1, step=1)
    path = stack_file(tmp_path, ensure_image(docker_client))
    backend = DockerBackend(tmp_path / "run", data)
    stack = FileStack(path, backend, data, tmp_path / "run" / "journal.jsonl")
    try:
        stack.start()
        assert stack.client().available_version() == 1
        assert stack.goldens.for_version(1) is not None  # recorded from the served answer
    finally:
        stack.close()
    project = project_name(tmp_path / "run")
    left = docker_client.api.containers(all=True, filters={"name": project})
    assert left == [], "a container of the stack was left behind"


def test_an_image_the_engine_lacks_is_one_error_before_anything_starts(
    docker_client, tmp_path: Path  # noqa: F811
) -> None:
    path = stack_file(tmp_path, "no-such-image-chaoskit:never")
    data = tmp_path / "data"
    backend = DockerBackend(tmp_path / "run", data)
    stack = FileStack(path, backend, data, Journal(tmp_path / "j.jsonl").path)
    with pytest.raises(ConfigError, match=r"services.serving.docker.image: image "
                                          r"'no-such-image-chaoskit:never' is not on the"):
        stack.start()
    project = project_name(tmp_path / "run")
    assert docker_client.api.containers(all=True, filters={"name": project}) == []


def test_an_attach_target_that_matches_nothing_names_the_key(tmp_path: Path) -> None:
    from chaoskit.stackfile import load_stack_file
    from chaoskit.stackfile.stack import make_file_backend

    path = tmp_path / "chaoskit.toml"
    path.write_text(textwrap.dedent("""
        [model]
        name = "mine"
        base_path = "models"

        [services.serving]
        role = "serving"
        attach = { label = "com.example.nothing=here" }
        ports = { rest = 8501 }
    """))
    with pytest.raises(ConfigError, match=r"chaoskit.toml: services.serving.attach: .*label "
                                          r"'com.example.nothing=here' matches 0 containers"):
        make_file_backend(load_stack_file(path), "docker", tmp_path / "run", tmp_path / "data",
                          where=str(path))  # fmt: skip
