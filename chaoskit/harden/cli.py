"""``chaoskit harden-check``: what an attacker on the stack's hosts would find easy.

Reports, for the stack under test (a stack file, its running containers, its DR
repository and DR site, and what the command line names): services running as root in
containers, serving containers with writable model mounts, privileged containers and
mounted Docker sockets, secret files readable by others, DR sites without TLS or that
answer without a token (probed for real), and DR jobs whose repository key has more
role than the job needs.  Each finding has a reason and a fix.  Exit code 0: nothing
found; 1: findings; 2: bad input (one line naming it).  This module is cheap to import.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from chaoskit.errors import ChaosKitError, ConfigError

USAGE_EXIT, FOUND_EXIT = 2, 1
PASSWORD_ENV = "CHAOSKIT_PASSWORD"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "harden-check",
        help="report root containers, writable model mounts, open secrets, weak DR-site "
        "and key settings",
        description="Check a stack's hardening: containers (root, writable model mounts, "
        "privileged, Docker socket), secret file modes, DR-site TLS and token (probed), "
        "repository key roles of the DR jobs.  Exit 0 none found, 1 findings, 2 bad input.",
    )  # fmt: skip
    p.add_argument("--stack", metavar="PATH",
                   help="stack file (default: ./chaoskit.toml if present)")  # fmt: skip
    p.add_argument("--backend", choices=("process", "docker"),
                   help="where the stack runs (default: docker when the stack file attaches "
                   "to containers, else process: no container checks)")  # fmt: skip
    p.add_argument("--project", help="the chaoskit Docker run to check (default: the one "
                   "running)")  # fmt: skip
    p.add_argument("--data-dir", metavar="DIR", type=Path,
                   help="the run's data directory ({data_dir} in the stack file)")  # fmt: skip
    p.add_argument("--repo", metavar="DIR", type=Path, help="a backup repository")
    p.add_argument("--password-file", metavar="FILE", type=Path,
                   help=f"an admin/operator password of --repo, to list its keys (else "
                   f"${PASSWORD_ENV})")  # fmt: skip
    p.add_argument("--agent-password-file", metavar="FILE", type=Path,
                   help="the password the backup agent runs with (a writer key is enough)")
    p.add_argument("--replicator-password-file", metavar="FILE", type=Path,
                   help="the password the replicator runs with (a writer key is enough)")
    p.add_argument("--site", metavar="URL", help="a DR site: http(s)://HOST:PORT or HOST:PORT")
    p.add_argument("--site-token-file", metavar="FILE", type=Path,
                   help="the token its clients use")  # fmt: skip
    p.add_argument("--tls-pin", metavar="sha256:HEX", help="the DR site's certificate pin")
    p.add_argument("--secret-file", metavar="FILE", type=Path, action="append", default=[],
                   help="another secret file to check (repeatable)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_harden_check)


def run_harden_check(args: argparse.Namespace) -> int:
    from chaoskit.harden.core import run_checks

    try:
        facts = collect(args)
    except ChaosKitError as e:
        print(f"chaoskit: error: {e}", file=sys.stderr)
        return USAGE_EXIT
    findings = run_checks(facts)
    checked = {"containers": len(facts.containers), "secret_files": len(facts.secrets),
               "dr_sites": len(facts.sites), "keys": len(facts.keys)}  # fmt: skip
    if args.json:
        print(json.dumps({"findings": [f.to_json() for f in findings], "notes": facts.notes,
                          "checked": checked}, indent=1))  # fmt: skip
    else:
        print(render(findings, facts.notes, checked))
    return FOUND_EXIT if findings else 0


def collect(args: argparse.Namespace) -> Any:
    """The facts of everything the arguments name (ChaosKitError on bad input)."""
    from chaoskit.harden import collect as c
    from chaoskit.harden.core import Facts
    from chaoskit.stackfile import load_stack_file

    facts = Facts()
    stack = args.stack or ("chaoskit.toml" if Path("chaoskit.toml").is_file() else None)
    file = load_stack_file(stack) if stack else None
    if args.tls_pin:
        from chaoskit.dr.protect.site_tls import check_pin

        args.tls_pin = check_pin(args.tls_pin)
    for flag in ("agent_password_file", "replicator_password_file", "password_file"):
        if getattr(args, flag) and args.repo is None:
            raise ConfigError(f"--{flag.replace('_', '-')} needs --repo (the repository)")
    if (args.site_token_file or args.tls_pin) and not args.site:
        raise ConfigError("--site-token-file and --tls-pin need --site (the DR site's URL)")
    if args.repo is not None and not c.is_repository(args.repo):
        raise ConfigError(f"--repo {str(args.repo)!r} is not a chaoskit repository (no config)")
    data_dir = args.data_dir.absolute() if args.data_dir else None
    attached = file is not None and all(s.attach for s in file.services.values())
    backend = args.backend or ("docker" if attached else "process")
    if backend == "process" and file is not None and attached:
        raise ConfigError(f"{stack}: its services attach to containers: use --backend docker")
    if not (file or args.repo or args.site or args.secret_file or backend == "docker"):
        raise ConfigError("nothing to check: give --stack (or run where chaoskit.toml is), "
                          "--backend docker, --repo, --site or --secret-file")  # fmt: skip
    containers: list[tuple[str, dict[str, Any]]] = []
    if backend == "process" and (file is not None or args.backend):
        facts.notes.append("skipped: process backend has no containers (container checks "
                           "need --backend docker)")  # fmt: skip
    elif backend == "docker":
        from chaoskit.stack.docker_engine import connect

        client = connect()
        if attached:
            assert file is not None
            containers = c.attached_containers(client, file, str(stack))
        else:
            project, containers = c.project_containers(client, args.project)
            facts.notes.append(f"containers of chaoskit run {project}")
            data_dir = data_dir or c.project_data_dir(client, project)
    stack_facts = c.read_stack(file, Path(str(stack)), data_dir) if file is not None else None
    if stack_facts is not None:
        roles, model_paths = stack_facts.roles, stack_facts.model_paths
        facts.notes += stack_facts.notes
        facts.sites += stack_facts.sites
    else:
        roles, model_paths = {}, [str(data_dir / "models")] if data_dir else []
    for service, attrs in containers:
        role = roles.get(service) or _replica_role(service, roles) or c.reference_role(service)
        facts.containers.append(c.container_facts(attrs, service, role, model_paths))

    named = [(p, what) for p, what in (
        (args.password_file, "repository password file"),
        (args.agent_password_file, "backup agent's password file"),
        (args.replicator_password_file, "replicator's password file"),
        (args.site_token_file, "DR-site token file"),
    ) if p is not None] + [(p, "secret file") for p in args.secret_file]  # fmt: skip
    found, _ = c.secret_files(named, required=True)
    facts.secrets += found
    derived = [(p, "repository key file") for p in c.key_files(args.repo)] if args.repo else []
    if stack_facts is not None:
        derived += stack_facts.secrets
    found, notes = c.secret_files(derived, required=False)
    facts.secrets += [s for s in found if s.path not in {f.path for f in facts.secrets}]
    facts.notes += notes

    if args.site:
        facts.sites.append(c.probe_site(args.site, token=True if args.site_token_file else None,
                                        tls_pin=args.tls_pin))  # fmt: skip
        if facts.sites[-1].tls and not args.tls_pin:
            facts.notes.append(f"--site {args.site}: its certificate was not checked (no "
                               "--tls-pin); only whether it asks for a token was")  # fmt: skip
    if args.repo is not None:
        password = (c.read_password(args.password_file, "--password-file")
                    if args.password_file else os.environ.get(PASSWORD_ENV))  # fmt: skip
        if password:
            where = (f"--password-file {str(args.password_file)!r}" if args.password_file
                     else f"${PASSWORD_ENV}")  # fmt: skip
            facts.notes += c.list_keys(args.repo, password, where)
        for job, flag in (("backup agent", args.agent_password_file),
                          ("replicator", args.replicator_password_file)):  # fmt: skip
            if flag is not None:
                facts.keys.append(c.job_key(args.repo, flag, job))
    if stack_facts is not None:
        _store_guard_key(facts, stack_facts)
    return facts


def _replica_role(service: str, roles: dict[str, str]) -> str | None:
    """``serving-b`` is a replica of ``serving`` (see :func:`replica_names`)."""
    base, _, letter = service.rpartition("-")
    return roles.get(base) if len(letter) == 1 and letter.isalpha() else None


def _store_guard_key(facts: Any, stack: Any) -> None:
    """The key the stack's DR engine (store guard and replicator) opens its repository with."""
    from chaoskit.harden import collect as c

    repo, password_file = stack.repository, stack.password_file
    if repo is None or password_file is None:
        return
    if not c.is_repository(repo) or not password_file.is_file():
        facts.notes.append(f"not there (yet): the DR engine's repository {repo} (its key "
                           "role is checked once a run made it)")  # fmt: skip
        return
    facts.keys.append(c.job_key(repo, password_file, "store guard"))


def render(findings: list[Any], notes: list[str], checked: dict[str, int]) -> str:
    """The findings as a table (check, subject, reason, fix), then notes and a summary."""
    width = max(100, min(shutil.get_terminal_size((160, 24)).columns, 200))
    lines = []
    if findings:
        cw = max(len("CHECK"), *(len(f.check) for f in findings))
        sw = min(36, max(len("SUBJECT"), *(len(f.subject) for f in findings)))
        rest = max(40, width - cw - sw - 6)
        rw, fw = rest * 11 // 20, rest - rest * 11 // 20
        lines.append(f"{'CHECK':{cw}}  {'SUBJECT':{sw}}  {'REASON':{rw}}  FIX")
        for f in findings:
            cols = [textwrap.wrap(f.subject, sw) or [""], textwrap.wrap(f.reason, rw),
                    textwrap.wrap(f.fix, fw)]  # fmt: skip
            for i in range(max(len(col) for col in cols)):
                subject, reason, fix = (col[i] if i < len(col) else "" for col in cols)
                check = f.check if i == 0 else ""
                lines.append(f"{check:{cw}}  {subject:{sw}}  {reason:{rw}}  {fix}".rstrip())
    lines += [f"note: {n}" for n in notes]
    what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in checked.items())
    verdict = f"{len(findings)} finding(s)" if findings else "no findings"
    lines.append(f"harden-check: {verdict} (checked {what})")
    return "\n".join(lines)
