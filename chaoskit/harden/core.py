"""The hardening checks, as pure functions over facts collected from a stack.

Collectors (:mod:`chaoskit.harden.collect`) turn a running stack, its stack file and
the command line into :class:`Facts`; each check here reads those facts and yields
:class:`Finding` s, each with the reason it is a risk and the fix.  Nothing here talks
to Docker, the file system or the network, so every check is tested on facts alone.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

MODEL_DESTINATIONS = ("/models",)
"""Container paths that hold models whatever the stack file says (TF Serving's default)."""
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
JOB_ROLES = {"backup agent": "writer", "replicator": "writer", "store guard": "operator"}
"""The role each DR job needs: the agent and the replicator only add; the store guard
(the stack's DR engine) also restores and forgets snapshots of damaged content."""


@dataclass(frozen=True)
class Finding:
    """One hardening problem: which check, about what, why it matters, how to fix it."""

    check: str
    subject: str
    reason: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Mount:
    """A container mount as ``container.attrs["Mounts"]`` shows it."""

    source: str
    destination: str
    type: str = "bind"  # bind | volume | tmpfs
    read_only: bool = False
    name: str = ""  # a volume's name


@dataclass(frozen=True)
class ContainerFacts:
    service: str
    role: str  # serving | trainer | dr-site | other (the stack file's roles)
    container: str  # its name
    user: str  # Config.User: "" is the image's default (root unless the image says)
    privileged: bool = False
    mounts: tuple[Mount, ...] = ()
    model_paths: tuple[str, ...] = ()
    """Paths (host side or in the container) that hold the stack's models."""


@dataclass(frozen=True)
class SecretFile:
    path: str
    what: str  # "repository key file", "DR-site token file", ...
    mode: int  # st_mode


@dataclass(frozen=True)
class SiteFacts:
    """A DR-site endpoint: what its configuration says and what a real probe saw."""

    subject: str  # the URL, or "services.<name>" of a stack file
    tls: bool
    token: bool | None = None
    """Whether its command or the user names a token (None: unknown)."""
    unauthenticated_status: int | None = None
    """HTTP status of GET /files without Authorization (None: not probed)."""
    probe_error: str | None = None
    """Why the probe could not be made (unreachable, TLS pin mismatch, ...)."""


@dataclass(frozen=True)
class KeyFacts:
    """The repository key a DR job runs with."""

    job: str  # a key of JOB_ROLES
    key_id: str
    role: str
    repo: str
    source: str  # where its password comes from


@dataclass
class Facts:
    containers: list[ContainerFacts] = field(default_factory=list)
    secrets: list[SecretFile] = field(default_factory=list)
    sites: list[SiteFacts] = field(default_factory=list)
    keys: list[KeyFacts] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was skipped or only listed (never a finding)."""


# -- containers -------------------------------------------------------------------------
def runs_as_root(user: str) -> bool:
    """``Config.User`` names uid 0: empty (the image default), ``0``, ``root``, ``0:1000``."""
    name = user.split(":", 1)[0].strip()
    return name in ("", "0", "root")


def _related(a: str, b: str) -> bool:
    """One path is the other or inside it."""
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


def is_model_mount(mount: Mount, model_paths: Iterable[str]) -> bool:
    """The mount holds models: its source or destination covers, or lies inside, a model
    path, or it is mounted at TF Serving's ``/models``."""
    ends = [p for p in (mount.source, mount.destination) if p.startswith("/")]
    if any(_related(mount.destination, m) for m in MODEL_DESTINATIONS):
        return True
    return any(_related(end, path) for end in ends for path in model_paths if path)


def check_root(facts: Facts) -> Iterator[Finding]:
    for c in facts.containers:
        if runs_as_root(c.user):
            shown = f"User {c.user!r}" if c.user else "no User set: the image's default, root"
            yield Finding(
                "root-user", f"{c.service} ({c.container})",
                f"runs as root in its container ({shown}): a process that breaks out, or "
                "writes through a mount, does it as root",
                "run it as an unprivileged user: docker run --user 1000:1000, compose "
                "'user: \"1000:1000\"', or USER in its Dockerfile",
            )  # fmt: skip


def check_model_mounts(facts: Facts) -> Iterator[Finding]:
    for c in facts.containers:
        if c.role != "serving":
            continue
        for m in c.mounts:
            if not m.read_only and is_model_mount(m, c.model_paths):
                what = f"volume {m.name}" if m.type == "volume" and m.name else m.source
                yield Finding(
                    "writable-model-mount", f"{c.service} ({c.container}): {m.destination}",
                    f"serving mounts the model store ({what}) writable: a compromised or "
                    "buggy server can change the versions it serves and every replica "
                    "that loads them",
                    f"mount it read-only (docker run -v {m.source}:{m.destination}:ro, "
                    "--mount ...,readonly, compose '- SRC:DST:ro'); serving only reads "
                    "models",
                )  # fmt: skip


def check_privileged(facts: Facts) -> Iterator[Finding]:
    for c in facts.containers:
        if c.privileged:
            yield Finding(
                "privileged", f"{c.service} ({c.container})",
                "runs privileged: every device and capability of the host, no seccomp or "
                "AppArmor confinement",
                "drop --privileged (compose 'privileged: true'); add only the capability "
                "it needs with --cap-add",
            )  # fmt: skip


def check_docker_socket(facts: Facts) -> Iterator[Finding]:
    for c in facts.containers:
        for m in c.mounts:
            if m.source in DOCKER_SOCKETS or m.destination in DOCKER_SOCKETS:
                yield Finding(
                    "docker-socket", f"{c.service} ({c.container}): {m.destination}",
                    f"mounts the Docker socket ({m.source}): whoever controls the "
                    "container controls the engine, i.e. is root on the host",
                    "remove the socket mount; a service that must talk to Docker gets a "
                    "restricted proxy (e.g. a socket proxy allowing only what it needs)",
                )  # fmt: skip


# -- secret files -------------------------------------------------------------------------
def _mode_problem(mode: int) -> str | None:
    bits = stat.S_IMODE(mode) & 0o077
    if not bits:
        return None
    who = []
    if bits & 0o070:
        who.append("its group")
    if bits & 0o007:
        who.append("everyone")
    verbs = [v for v, mask in (("read", 0o044), ("write", 0o022), ("execute", 0o011))
             if bits & mask]  # fmt: skip
    return f"mode {stat.S_IMODE(mode):04o}: {' and '.join(who)} may {'/'.join(verbs)} it"


def check_secret_files(facts: Facts) -> Iterator[Finding]:
    for s in facts.secrets:
        problem = _mode_problem(s.mode)
        if problem is not None:
            yield Finding(
                "secret-file-mode", s.path,
                f"{s.what}, {problem}: any account on the host can take the secret",
                f"chmod 600 {s.path}",
            )  # fmt: skip


# -- DR site -------------------------------------------------------------------------
def check_sites(facts: Facts) -> Iterator[Finding]:
    for site in facts.sites:
        if not site.tls:
            yield Finding(
                "dr-site-no-tls", site.subject,
                "the DR site speaks plain HTTP: its bearer token and the repository's "
                "files cross the network readable and alterable",
                "chaoskit backup site cert --out DIR --host HOST; serve with --tls-cert "
                "DIR/site.crt --tls-key DIR/site.key; clients pass --tls-pin sha256:...",
            )  # fmt: skip
        status = site.unauthenticated_status
        if site.probe_error is not None:
            yield Finding(
                "dr-site-unprobed", site.subject,
                f"cannot probe it ({site.probe_error}), so whether it refuses a client "
                "without a token is unproven",
                "start it, or give the address it answers on (--site URL, --tls-pin for "
                "HTTPS)",
            )  # fmt: skip
        elif status is not None and status not in (401, 403):
            yield Finding(
                "dr-site-no-token", site.subject,
                f"GET /files without Authorization answered {status}, not 401: the DR "
                "site serves (or may take) repository files from anyone who reaches it",
                "run chaoskit backup site --token-file FILE (and --tokens for reader/"
                "admin roles); clients send Authorization: Bearer <token>",
            )  # fmt: skip
        elif status is None and site.token is False:
            yield Finding(
                "dr-site-no-token", site.subject,
                "its command names no --token-file or --tokens: clients are not "
                "authenticated",
                "add --token-file {dr_site_token_file} (and --tokens for reader/admin "
                "roles) to its command",
            )  # fmt: skip


# -- keys -------------------------------------------------------------------------------
def excess_operations(role: str, needed: str) -> list[str]:
    """What *role* may do that *needed* may not (empty: not more than needed)."""
    from chaoskit.dr.protect.repository.roles import ALLOWED  # the repository: not at import

    return sorted(ALLOWED.get(role, frozenset()) - ALLOWED[needed])


def check_keys(facts: Facts) -> Iterator[Finding]:
    for k in facts.keys:
        needed = JOB_ROLES[k.job]
        extra = excess_operations(k.role, needed)
        if extra:
            yield Finding(
                "key-role", f"{k.job} key {k.key_id[:8]} ({k.source})",
                f"the {k.job} runs with a key of role {k.role}, which may also "
                f"{', '.join(extra)}; it needs only {needed}: whoever takes that host "
                "can do all of it",
                f"chaoskit backup key add --repo {k.repo} --role {needed}, and give the "
                f"{k.job} that key's password instead",
            )  # fmt: skip


Check = Callable[[Facts], Iterable[Finding]]
CHECKS: dict[str, Check] = {
    "root-user": check_root,
    "writable-model-mount": check_model_mounts,
    "privileged": check_privileged,
    "docker-socket": check_docker_socket,
    "secret-file-mode": check_secret_files,
    "dr-site": check_sites,
    "key-role": check_keys,
}


def run_checks(facts: Facts) -> list[Finding]:
    """Every check's findings, in the order of :data:`CHECKS`."""
    return [finding for check in CHECKS.values() for finding in check(facts)]
