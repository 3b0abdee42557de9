"""Collecting the facts the hardening checks read: containers, secret files, DR sites, keys.

Each collector reads one real thing (the Docker engine's view of a container, a file's
mode, a DR site's answer to a request without a token, the role a password opens) and
returns plain facts (:mod:`chaoskit.harden.core`); translating that into findings is the
checks' job.  Errors a user can cause (a stack file or password file that is not there,
a wrong password, no Docker engine) are ChaosKitErrors naming the bad value.
"""

from __future__ import annotations

import http.client
import ssl
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaoskit.errors import ChaosKitError, ConfigError, RepositoryError
from chaoskit.harden.core import ContainerFacts, KeyFacts, Mount, SecretFile, SiteFacts
from chaoskit.stackfile.schema import StackFile

SECRET_OPTIONS = {
    "--password-file": "repository password file",
    "--new-password-file": "repository password file",
    "--token-file": "DR-site token file",
    "--tokens": "DR-site tokens file",
    "--tls-key": "TLS private key",
}
"""Command-line options whose value is a secret file, in any service's command."""
PROBE_TIMEOUT = 5.0


# -- the stack file ------------------------------------------------------------------
@dataclass
class StackFacts:
    """What a stack file says, with its paths resolved (None: needs an unknown ``{data_dir}``)."""

    roles: dict[str, str]  # service -> role
    model_paths: list[str]
    secrets: list[tuple[Path, str]] = field(default_factory=list)  # path, what it is
    sites: list[SiteFacts] = field(default_factory=list)
    repository: Path | None = None
    password_file: Path | None = None
    notes: list[str] = field(default_factory=list)


def _resolve(text: str, values: Mapping[str, str], base: Path) -> Path | None:
    try:
        path = Path(text.format_map(values))
    except (KeyError, ValueError, IndexError):
        return None
    return path if path.is_absolute() else base / path


def read_stack(file: StackFile, path: Path, data_dir: Path | None) -> StackFacts:
    """Resolve what the checks need from a stack file (placeholders as a run fills them)."""
    stack_dir = path.absolute().parent
    values = {"stack_dir": str(stack_dir), "python": sys.executable,
              "model_name": file.model.name}  # fmt: skip
    if data_dir is not None:
        values.update(data_dir=str(data_dir), dr_site_root=str(data_dir / "dr-site"),
                      dr_site_token_file=str(data_dir / "dr-site.token"))  # fmt: skip
    unresolved: list[str] = []

    def resolve(text: str, key: str) -> Path | None:
        found = _resolve(text, values, stack_dir)
        if found is None:
            unresolved.append(key)
        return found

    model = resolve(file.model.base_path, "model.base_path")
    if model is not None:
        values["model_base_path"] = str(model)
    facts = StackFacts(
        roles={name: s.role for name, s in file.services.items()},
        model_paths=[str(model)] if model is not None else [],
    )
    facts.repository = resolve(file.dr.repository, "dr.repository")
    if file.dr.password_file:
        facts.password_file = resolve(file.dr.password_file, "dr.password_file")
    elif facts.repository is not None:
        facts.password_file = facts.repository.with_name(facts.repository.name + ".password")
    if facts.password_file is not None:
        facts.secrets.append((facts.password_file, "the DR engine's repository password file"))
    if facts.repository is not None:
        facts.secrets += [(p, "repository key file") for p in key_files(facts.repository)]
    for name, service in file.services.items():
        command = service.command or (service.docker.command if service.docker else None) or []
        for option, value in zip(command, command[1:], strict=False):
            if option in SECRET_OPTIONS:
                found = resolve(value, f"services.{name}.command {option}")
                if found is not None:
                    facts.secrets.append((found, SECRET_OPTIONS[option]))
        if service.role == "dr-site" and service.command:
            facts.sites.append(SiteFacts(
                f"services.{name}", tls="--tls-cert" in command,
                token="--token-file" in command or "--tokens" in command,
            ))  # fmt: skip
    if unresolved:
        facts.notes.append(f"not checked: {', '.join(dict.fromkeys(unresolved))} (they name "
                           "{data_dir}; give --data-dir, the run's data directory)")  # fmt: skip
    return facts


def key_files(repository: Path) -> list[Path]:
    keys = repository / "keys"
    try:
        return sorted(p for p in keys.iterdir() if p.is_file() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


# -- secret files -----------------------------------------------------------------------
def secret_files(
    named: Iterable[tuple[Path, str]], *, required: bool
) -> tuple[list[SecretFile], list[str]]:
    """The modes of secret files; a missing one is an error when *required* (the user named
    it), else a note."""
    found: list[SecretFile] = []
    notes: list[str] = []
    unique: dict[Path, str] = {}
    for path, what in named:
        unique.setdefault(path, what)  # a file named twice: checked once, first name wins
    for path, what in unique.items():
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as e:
            if required:
                raise ConfigError(f"{what} {str(path)!r} does not exist") from e
            notes.append(f"not there (yet): {what} {path}")
            continue
        except OSError as e:
            raise ConfigError(f"cannot stat {what} {str(path)!r}: {e.strerror}") from e
        found.append(SecretFile(str(path), what, mode))
    return found, notes


# -- containers ------------------------------------------------------------------------
def container_facts(attrs: Mapping[str, Any], service: str, role: str,
                    model_paths: Iterable[str]) -> ContainerFacts:  # fmt: skip
    """Facts from a container's ``attrs`` (``docker inspect``)."""
    mounts = tuple(
        Mount(source=str(m.get("Source") or ""), destination=str(m.get("Destination") or ""),
              type=str(m.get("Type") or "bind"), read_only=not m.get("RW", True),
              name=str(m.get("Name") or ""))  # fmt: skip
        for m in attrs.get("Mounts") or ()
    )
    config, host = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
    return ContainerFacts(
        service=service, role=role, container=str(attrs.get("Name", "?")).lstrip("/"),
        user=str(config.get("User") or ""), privileged=bool(host.get("Privileged")),
        mounts=mounts, model_paths=tuple(model_paths),
    )  # fmt: skip


def reference_role(service: str) -> str:
    """The role of a reference-stack service (no stack file): serving, serving-b, ..."""
    if service == "serving" or service.startswith("serving-"):
        return "serving"
    return service if service in ("trainer", "dr-site") else "other"


Inspected = list[tuple[str, dict[str, Any]]]
"""(service, the container's ``docker inspect``) pairs."""


def attached_containers(client: Any, file: StackFile, where: str) -> Inspected:
    """(service, attrs) of each container a stack file's ``attach`` services name."""
    from chaoskit.stack.docker_attach import find_container
    from chaoskit.stackfile.stack import attach_targets

    found = []
    for target in attach_targets(file, where=where):
        try:
            found.append((target.service, find_container(client.api, target)))
        except ChaosKitError as e:
            raise ConfigError(f"{where}: services.{target.service}.attach: {e}") from e
    return found


def project_containers(client: Any, project: str | None) -> tuple[str, Inspected]:
    """The project (given, or the one chaoskit run live on the engine) and (service, attrs)
    of each of its containers."""
    from chaoskit.stack import docker_engine as engine

    with engine.engine_errors("listing chaoskit's containers"):
        listed = client.api.containers(all=True, filters={"label": engine.MANAGED})
    projects: dict[str, list[dict[str, Any]]] = {}
    for c in listed:
        labels = c.get("Labels") or {}
        if engine.SERVICE in labels and engine.owner_alive(labels.get(engine.OWNER, "")):
            projects.setdefault(labels.get(engine.PROJECT, "?"), []).append(c)
    if project is None:
        if len(projects) != 1:
            live = ", ".join(sorted(projects)) or "none"
            raise ConfigError(f"--backend docker: {len(projects)} chaoskit stacks run on the "
                              f"Docker engine (projects: {live}); start one, or name it "
                              "with --project")  # fmt: skip
        project = next(iter(projects))
    elif project not in projects:
        raise ConfigError(f"--project {project!r}: no running chaoskit stack of that name "
                          f"(running: {', '.join(sorted(projects)) or 'none'})")  # fmt: skip
    found = []
    for c in projects[project]:
        with engine.engine_errors(f"inspecting container {c['Id'][:12]}"):
            found.append((c["Labels"][engine.SERVICE], client.api.inspect_container(c["Id"])))
    return project, sorted(found, key=lambda f: f[0])


def project_data_dir(client: Any, project: str) -> Path | None:
    """A chaoskit Docker run's data directory: its ``<project>-models`` volume is bound to
    ``<data_dir>/models``."""
    import docker.errors

    try:
        volume = client.api.inspect_volume(f"{project}-models")
    except docker.errors.DockerException:
        return None
    device = (volume.get("Options") or {}).get("device")
    return Path(device).parent if device else None


# -- DR site ------------------------------------------------------------------------
def site_endpoint(url: str, tls_pin: str | None) -> tuple[str, str, int]:
    """(scheme, host, port) of ``http://H:P``, ``https://H:P`` or ``H:P`` (HTTPS when pinned)."""
    text = url if "://" in url else f"{'https' if tls_pin else 'http'}://{url}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ConfigError(f"--site {url!r}: expected http://HOST:PORT, https://HOST:PORT "
                          "or HOST:PORT")  # fmt: skip
    if tls_pin and parts.scheme == "http":
        raise ConfigError(f"--site {url!r}: --tls-pin needs HTTPS (https://...)")
    return parts.scheme, parts.hostname, port


def probe_site(url: str, *, token: bool | None, tls_pin: str | None = None,
               timeout: float = PROBE_TIMEOUT) -> SiteFacts:  # fmt: skip
    """GET /files without Authorization, really; a DR site must refuse it (401)."""
    scheme, host, port = site_endpoint(url, tls_pin)
    conn: http.client.HTTPConnection
    if scheme == "https" and tls_pin:
        from chaoskit.dr.protect.site_tls import PinnedHTTPSConnection

        conn = PinnedHTTPSConnection(host, port, tls_pin, timeout=timeout)
    elif scheme == "https":  # unpinned: only whether it asks for a token is probed
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    status: int | None = None
    error: str | None = None
    try:
        conn.request("GET", "/files")
        answer = conn.getresponse()
        answer.read()
        status = answer.status
    except (OSError, http.client.HTTPException, ChaosKitError) as e:
        error = str(e) or type(e).__name__
    finally:
        conn.close()
    return SiteFacts(url, tls=scheme == "https", token=token,
                     unauthenticated_status=status, probe_error=error)  # fmt: skip


# -- keys ------------------------------------------------------------------------------
def read_password(path: Path, what: str) -> str:
    """The password in *path*; ConfigError naming the file if unreadable or empty."""
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{what} {str(path)!r}: {reason}") from e
    if not secret:
        raise ConfigError(f"{what} {str(path)!r} is empty")
    return secret


def job_key(repo: Path, password_file: Path, job: str) -> KeyFacts:
    """The key a DR *job* runs with: the role the password in *password_file* opens."""
    from chaoskit.dr.protect.repository.repo import open_repository

    try:
        opened = open_repository(repo, read_password(password_file, f"{job} password file"))
    except RepositoryError as e:
        raise ConfigError(f"{job} password file {str(password_file)!r}: {e}") from e
    return KeyFacts(job, opened.key_id, opened.role, str(repo), str(password_file))


def list_keys(repo: Path, password: str, where: str) -> list[str]:
    """``key list`` as note lines: id, role, user@host (the listing key marked);
    *where* names the password's source in errors."""
    from chaoskit.dr.protect.repository.repo import open_repository

    try:
        keys = open_repository(repo, password).list_keys()
    except RepositoryError as e:
        raise ConfigError(f"{where}: {e}") from e
    return [f"key {k.id[:8]} role {k.role:8} {k.username}@{k.hostname}"
            + (" (the listing key)" if k.current else "") for k in keys]  # fmt: skip


def is_repository(path: Path) -> bool:
    return (path / "config").is_file()

