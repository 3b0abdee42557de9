"""``chaoskit harden-check`` against real parts: files with real modes, a real repository
with admin, operator and writer keys, real DR-site processes (with and without a token,
with and without TLS) and real Docker containers (with and without a user and a
read-only model mount).  The command runs as the user runs it, in a child process."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.dr.protect.repository.repo import init_repository
from chaoskit.dr.protect.site_tls import make_certificate

pytestmark = pytest.mark.integration

SCRYPT_N = 2**10  # real scrypt, cheap parameters


def harden(*args: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``chaoskit harden-check ARGS``; exit code, stdout, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "chaoskit.cli", "harden-check", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def harden_json(*args: str | Path) -> tuple[int, dict]:
    code, out, err = harden(*args, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def first_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 20.0) -> re.Match[str]:
    """Wait (bounded) for the child's stdout line matching *pattern*."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
    raise AssertionError(f"no line matching {pattern!r} from {proc.args}: {seen}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start(processes: list[subprocess.Popen[str]], *command: str | Path,
          pattern: str) -> re.Match[str]:  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-u", *map(str, command)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    processes.append(proc)
    return first_line(proc, pattern)


# -- secret files ------------------------------------------------------------------------
def test_a_secret_file_readable_by_others_is_found_and_a_private_one_is_not(tmp_path):
    open_file = secret(tmp_path / "open.token", "t", 0o644)
    private = secret(tmp_path / "private.token", "t", 0o600)
    code, report = harden_json("--secret-file", open_file, "--secret-file", private)
    assert code == 1
    (finding,) = report["findings"]
    assert finding["check"] == "secret-file-mode" and finding["subject"] == str(open_file)
    assert "mode 0644" in finding["reason"] and finding["fix"] == f"chmod 600 {open_file}"
    assert report["checked"]["secret_files"] == 2
    code, out, _ = harden("--secret-file", private)
    assert code == 0 and "no findings (checked 0 containers, 1 secret files" in out


# -- repository keys -----------------------------------------------------------------------
@pytest.fixture
def repo(tmp_path: Path) -> dict[str, Path]:
    """A repository with an admin, an operator and a writer key; every file 0600."""
    root = tmp_path / "repo"
    repository = init_repository(root, "admin-pw", scrypt_n=SCRYPT_N)
    repository.add_key("operator-pw", role="operator", scrypt_n=SCRYPT_N)
    repository.add_key("writer-pw", role="writer", scrypt_n=SCRYPT_N)
    for key in (root / "keys").iterdir():
        key.chmod(0o600)
    return {"root": root, **{role: secret(tmp_path / f"{role}.pw", f"{role}-pw")
                             for role in ("admin", "operator", "writer")}}  # fmt: skip


def test_a_backup_agent_with_an_operator_key_is_found_one_with_a_writer_key_is_not(repo):
    code, report = harden_json("--repo", repo["root"], "--password-file", repo["admin"],
                               "--agent-password-file", repo["operator"],
                               "--replicator-password-file", repo["writer"])  # fmt: skip
    assert code == 1
    (finding,) = report["findings"]
    assert finding["check"] == "key-role" and finding["subject"].startswith("backup agent key")
    assert "role operator" in finding["reason"] and "restore" in finding["reason"]
    assert f"--repo {repo['root']} --role writer" in finding["fix"]
    roles = sorted(re.search(r"role (\w+)", n)[1] for n in report["notes"] if "key " in n)
    assert roles == ["admin", "operator", "writer"]
    code, out, _ = harden("--repo", repo["root"], "--agent-password-file", repo["writer"],
                          "--replicator-password-file", repo["writer"])  # fmt: skip
    assert code == 0, out


def test_repository_key_files_readable_by_others_are_found(repo):
    key = sorted((repo["root"] / "keys").iterdir())[0]
    key.chmod(0o644)
    code, report = harden_json("--repo", repo["root"])
    assert code == 1
    assert [(f["check"], f["subject"]) for f in report["findings"]] == [
        ("secret-file-mode", str(key))]  # fmt: skip
    assert "repository key file" in report["findings"][0]["reason"]


# -- DR sites --------------------------------------------------------------------------
SITE = "dr-site: serving .* on (https?://[\\d.]+:\\d+)"


def test_a_chaoskit_site_over_http_lacks_tls_only_and_with_tls_passes(tmp_path, processes):
    token = secret(tmp_path / "token", "site-token")
    url = start(processes, "-m", "chaoskit.dr.protect.site", "--root", tmp_path / "plain",
                "--token-file", token, pattern=SITE)[1]  # fmt: skip
    code, report = harden_json("--site", url, "--site-token-file", token)
    assert code == 1
    assert [f["check"] for f in report["findings"]] == ["dr-site-no-tls"]  # 401 without token

    cert, key, pin = make_certificate(tmp_path / "tls", ["127.0.0.1"])
    url = start(processes, "-m", "chaoskit.dr.protect.site", "--root", tmp_path / "tls-root",
                "--token-file", token, "--tls-cert", cert, "--tls-key", key,
                pattern=SITE)[1]  # fmt: skip
    assert url.startswith("https://")
    code, out, err = harden("--site", url, "--site-token-file", token, "--tls-pin", pin,
                            "--secret-file", key)  # fmt: skip
    assert code == 0, out + err
    other = "sha256:" + "0" * 64  # a pin that is not the site's: the probe refuses to talk
    code, report = harden_json("--site", url, "--tls-pin", other)
    assert [f["check"] for f in report["findings"]] == ["dr-site-unprobed"]
    assert "not the pinned" in report["findings"][0]["reason"]


def test_a_site_that_answers_without_a_token_is_found(tmp_path, processes):
    port = start(processes, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                 tmp_path, "0", pattern=r"port (\d+)")[1]  # fmt: skip
    code, report = harden_json("--site", f"127.0.0.1:{port}")
    assert code == 1
    checks = {f["check"]: f for f in report["findings"]}
    assert set(checks) == {"dr-site-no-tls", "dr-site-no-token"}
    assert "answered 404, not 401" in checks["dr-site-no-token"]["reason"]


# -- bad input ---------------------------------------------------------------------------
def test_bad_input_is_one_line_and_exit_2(tmp_path, repo):
    missing = tmp_path / "nope.toml"
    cases = [
        (["--stack", missing], f"stack file '{missing}' does not exist"),
        (["--repo", repo["root"], "--password-file", tmp_path],  # a directory: unreadable
         f"--password-file '{tmp_path}': Is a directory"),
        (["--repo", repo["root"], "--agent-password-file", tmp_path / "gone.pw"],
         f"backup agent's password file '{tmp_path / 'gone.pw'}' does not exist"),
        (["--repo", repo["root"], "--agent-password-file", secret(tmp_path / "w", "wrong")],
         f"backup agent password file '{tmp_path / 'w'}': wrong password"),
        (["--repo", repo["root"], "--password-file", repo["writer"]],  # may not list keys
         f"--password-file '{repo['writer']}': key "),
        (["--secret-file", tmp_path / "absent"], f"secret file '{tmp_path / 'absent'}' does not"),
        (["--site", "dr:http"], "--site 'dr:http': expected"),
        ([], "nothing to check"),
    ]  # fmt: skip
    for args, message in cases:
        code, out, err = harden(*args, cwd=tmp_path)
        assert code == 2, (args, out, err)
        assert err.count("\n") == 1 and err.startswith("chaoskit: error: ") and message in err
        assert out == ""


def test_the_process_backend_says_container_checks_are_skipped(tmp_path):
    stack = tmp_path / "chaoskit.toml"
    stack.write_text('[model]\nname = "m"\nbase_path = "models"\n\n[services.serving]\n'
                     'role = "serving"\ncommand = ["srv"]\n\n[dr]\nrepository = "backups"\n')
    code, out, _ = harden(cwd=tmp_path)  # ./chaoskit.toml by default
    assert code == 0, out
    assert "note: skipped: process backend has no containers" in out
    assert "not there (yet): the DR engine's repository" in out


# -- Docker containers -----------------------------------------------------------------
LABEL = "chaoskit.test"


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Two long-sleeping containers of the local chaoskit image sharing a model store: one
    as root with the store writable, one as a user with it read-only; labelled, removed at
    the end whatever happens."""
    import docker_support

    docker_support.engine_or_skip()
    from docker.types import Mount

    from chaoskit.stack.docker_engine import connect
    from chaoskit.stack.docker_image import ensure_image, host_paths

    client = connect(timeout=30)
    api = client.api
    models = tmp_path / "models" / "m"
    models.mkdir(parents=True)
    suffix = tmp_path.name[-12:].lower().replace("_", "-")
    names = {"open": f"harden-open-{suffix}", "closed": f"harden-closed-{suffix}"}
    base = [Mount(p, p, type="bind", read_only=True) for p in host_paths()]
    made = []
    try:
        for kind, user, read_only in (("open", None, False),
                                      ("closed", f"{os.getuid() or 1000}:1000", True)):
            host_config = api.create_host_config(init=True, mounts=[
                *base, Mount("/models/m", str(models), type="bind", read_only=read_only)])
            made.append(api.create_container(
                ensure_image(client), [sys.executable, "-c", "import time; time.sleep(300)"],
                name=names[kind], user=user, labels={LABEL: f"harden-{suffix}"},
                host_config=host_config,
            )["Id"])  # fmt: skip
            api.start(made[-1])
        yield {"models": str(models), **names}
    finally:
        for ident in made:
            api.remove_container(ident, force=True)
        assert not api.containers(all=True, filters={"label": f"{LABEL}=harden-{suffix}"})


def attach_stack(path: Path, models: str, container: str) -> Path:
    path.write_text(f'[model]\nname = "m"\nbase_path = "{models}"\n\n[services.serving]\n'
                    f'role = "serving"\nattach = {{ container = "{container}" }}\n'
                    'ports = { rest = 8501 }\n\n[dr]\nrepository = "backups"\n')
    return path


@pytest.mark.docker
def test_root_and_a_writable_model_mount_are_found_in_real_containers(containers, tmp_path):
    bad = attach_stack(tmp_path / "bad.toml", containers["models"], containers["open"])
    code, report = harden_json("--stack", bad)
    assert code == 1
    found = {f["check"]: f for f in report["findings"]}
    assert set(found) == {"root-user", "writable-model-mount"}
    assert found["root-user"]["subject"] == f"serving ({containers['open']})"
    assert "no User" in found["root-user"]["reason"]
    assert found["writable-model-mount"]["subject"].endswith(": /models/m")
    assert report["checked"]["containers"] == 1

    good = attach_stack(tmp_path / "good.toml", containers["models"], containers["closed"])
    code, out, err = harden("--stack", good)
    assert code == 0, out + err
    assert "checked 1 containers" in out


@pytest.mark.docker
def test_a_running_chaoskit_docker_run_is_found_by_its_labels(tmp_path):
    """No stack file: the run's containers by chaoskit's labels, the reference stack's
    roles, the data directory from the run's models volume."""
    import docker_support

    docker_support.engine_or_skip()
    from docker.types import Mount

    from chaoskit.stack.docker_engine import connect, labels_for, remove_project
    from chaoskit.stack.docker_image import ensure_image, host_paths

    client = connect(timeout=30)
    api = client.api
    project = f"chaoskit-harden-{tmp_path.name[-10:].lower().replace('_', '-')}"
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    base = [Mount(p, p, type="bind", read_only=True) for p in host_paths()]
    try:
        volume = api.create_volume(f"{project}-models", driver="local",
                                   labels=labels_for(project), driver_opts={
                                       "type": "none", "o": "bind",
                                       "device": str(data / "models")})["Name"]  # fmt: skip
        for service, user in (("serving-b", None), ("trainer", "1000:1000")):
            mounts = [*base, Mount(str(data / "models"), volume, type="volume")]
            made = api.create_container(
                ensure_image(client), [sys.executable, "-c", "import time; time.sleep(300)"],
                name=f"{project}-{service}", user=user, labels=labels_for(project, service),
                host_config=api.create_host_config(init=True, mounts=mounts),
            )  # fmt: skip
            api.start(made["Id"])
        code, report = harden_json("--backend", "docker", "--project", project)
    finally:
        remove_project(client, project)
    assert code == 1
    assert sorted((f["check"], f["subject"].split(" ")[0]) for f in report["findings"]) == [
        ("root-user", "serving-b"), ("writable-model-mount", "serving-b")]  # fmt: skip
    assert report["checked"]["containers"] == 2
    assert f"containers of chaoskit run {project}" in report["notes"]
