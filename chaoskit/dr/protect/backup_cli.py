"""``chaoskit backup ...``: the backup repository from the command line.

The password comes from $CHAOSKIT_PASSWORD or ``--password-file``, never from the
command line (it would show in ``ps`` and shell history).  The key it opens has a role
(``key list`` shows it); an operation the role does not allow prints one line naming
the key, its role and the operation, writes nothing, and exits with 2.  This module
stays cheap to import; the repository code is imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoskit.errors import ConfigError, PermissionDeniedError
from chaoskit.signals import StopSignals

if TYPE_CHECKING:
    from chaoskit.dr.protect.repository.repo import Repository

PASSWORD_ENV = "CHAOSKIT_PASSWORD"
NEW_PASSWORD_ENV = "CHAOSKIT_NEW_PASSWORD"
REPOSITORY_ENV = "CHAOSKIT_REPOSITORY"
ROLES = ("admin", "operator", "writer", "reader")  # chaoskit.dr.protect.repository.roles.ROLES
REFUSED_EXIT = 2


def _read_secret(file: str | None, env: str, what: str) -> str:
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{what} file {file}: {e.strerror}") from e
        secret = text.rstrip("\r\n")
    else:
        secret = os.environ.get(env, "")
    if not secret:
        flag = "--new-password-file" if env == NEW_PASSWORD_ENV else "--password-file"
        raise ConfigError(f"no {what}: set ${env} or pass {flag}")
    return secret


def _show_warning(
    message: Any,
    category: Any,
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    print(f"chaoskit: warning: {message}", file=sys.stderr)


def _repo_path(args: argparse.Namespace) -> str:
    path = args.repo or os.environ.get(REPOSITORY_ENV)
    if not path:
        raise ConfigError(f"no repository: pass --repo or set ${REPOSITORY_ENV}")
    return str(path)


def _open(args: argparse.Namespace) -> Repository:
    from chaoskit.dr.protect.repository.repo import open_repository

    warnings.showwarning = _show_warning
    return open_repository(
        _repo_path(args), _read_secret(args.password_file, PASSWORD_ENV, "password")
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def _progress(verb: str) -> Any:
    from chaoskit.dr.protect.repository.progress import Progress

    return Progress.for_terminal(verb)


def cmd_init(args: argparse.Namespace) -> int:
    from chaoskit.dr.protect.repository.repo import init_repository

    repo = init_repository(
        _repo_path(args), _read_secret(args.password_file, PASSWORD_ENV, "password")
    )
    print(f"created chaoskit repository {repo.id[:8]} at {repo.root}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    repo = _open(args)
    snap = repo.backup(
        args.dir,
        tags=args.tag or (),
        checkpoint_step=args.step,
        model_name=args.model,
        model_version=args.model_version,
        progress=_progress("backup"),
    )
    s = snap.summary
    print(
        f"snapshot {snap.short_id} saved: {s['files']} files, {_size(s['bytes'])}, "
        f"{_size(s['new_bytes'])} new ({_size(s['stored_bytes'])} stored), "
        f"{s['unchanged_files']} unchanged"
    )
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    snaps = _open(args).snapshots()
    if args.json:
        print(json.dumps([s.to_json(with_files=False) for s in snaps], indent=1))
        return 0
    print(
        f"{'ID':8}  {'checkpoint time (UTC)':25}  {'step':>7}  {'model':16}  {'host':12}  "
        f"{'files':>5}  {'size':>10}  tags"
    )
    for s in snaps:
        step = "-" if s.checkpoint_step is None else str(s.checkpoint_step)
        model = (s.model_name or "-") + (f"/{s.model_version}" if s.model_version else "")
        print(
            f"{s.short_id:8}  {s.time_iso:25}  {step:>7}  {model[:16]:16}  "
            f"{s.hostname[:12]:12}  {s.summary.get('files', 0):>5}  "
            f"{_size(s.summary.get('bytes', 0)):>10}  {','.join(s.tags)}"
        )
    print(f"{len(snaps)} snapshot(s)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    repo = _open(args)
    result = repo.restore(args.snapshot, args.target, progress=_progress("restore"))
    print(
        f"restored snapshot {result.snapshot.short_id} to {result.target}: {result.files} "
        f"files, {_size(result.bytes)}, every SHA-256 verified"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = _open(args).verify(args.dir, args.snapshot)
    for line in report.lines():
        print(line)
    if report.ok:
        print(f"{args.dir} matches snapshot {report.snapshot.short_id} ({report.matched} files)")
        return 0
    print(
        f"{args.dir} differs from snapshot {report.snapshot.short_id}: "
        f"{len(report.missing)} missing, {len(report.changed)} changed, "
        f"{len(report.extra)} extra",
        file=sys.stderr,
    )
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    report = _open(args).check(read_data=args.read_data, progress=_progress("check"))
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"error: {problem}")
    what = f"{report.snapshots} snapshots, {report.packs} packs, {report.chunks} chunks"
    if args.read_data:
        what += f", {_size(report.bytes_read)} read"
    if report.ok:
        print(f"no errors found ({what})")
        return 0
    print(
        f"{len(report.problems)} error(s) found ({what}); affected snapshots: "
        f"{', '.join(sorted(report.affected_snapshots)) or 'none'}",
        file=sys.stderr,
    )
    return 1


def cmd_forget(args: argparse.Namespace) -> int:
    from chaoskit.dr.protect.repository.retention import RetentionPolicy

    policy = RetentionPolicy.from_options(
        keep_within=args.keep_within,
        keep_last=args.keep_last,
        keep_hourly=args.keep_hourly,
        keep_daily=args.keep_daily,
        keep_weekly=args.keep_weekly,
        keep_tags=tuple(args.keep_tag or ()),
    )
    result = _open(args).forget(
        policy, ids=tuple(args.snapshots), prune=args.prune, dry_run=args.dry_run
    )
    verb = "would remove" if args.dry_run else "removed"
    for snap, reasons in result.kept:
        print(f"keep    {snap.short_id}  {snap.time_iso}  ({', '.join(reasons)})")
    for snap in result.removed:
        print(f"{verb:7} {snap.short_id}  {snap.time_iso}")
    if result.prune is not None:
        _print_prune(result.prune)
    return 0


def _print_prune(stats: Any) -> None:
    print(
        f"prune: {stats.packs_deleted} packs deleted, {stats.packs_rewritten} rewritten, "
        f"{stats.orphan_packs_deleted} orphaned removed, {stats.chunks_removed} chunks "
        f"removed, {_size(stats.bytes_freed)} freed"
    )


def cmd_prune(args: argparse.Namespace) -> int:
    _print_prune(_open(args).prune())
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    repo = _open(args)
    repo.require("key add")  # before asking for the new password
    password = _read_secret(args.new_password_file, NEW_PASSWORD_ENV, "new password")
    key_id = repo.add_key(password, role=args.role)
    print(f"added key {key_id[:8]} (role {args.role})")
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    for key in _open(args).list_keys():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(key.created))
        mark = "*" if key.current else " "
        print(f"{mark}{key.id[:8]}  {key.role:8}  {key.username}@{key.hostname}  {created}")
    return 0


def cmd_key_remove(args: argparse.Namespace) -> int:
    removed = _open(args).remove_key(args.key_id)
    print(f"removed key {removed[:8]}")
    return 0


def cmd_key_passwd(args: argparse.Namespace) -> int:
    repo = _open(args)
    key_id = repo.change_password(
        _read_secret(args.new_password_file, NEW_PASSWORD_ENV, "new password")
    )
    print(f"password changed (new key {key_id[:8]})")
    return 0


def _more_role_than_needed(repo: Repository, job: str) -> None:
    """A note on stderr when *job* (which only ships) runs with a key that reads: a host
    that is broken into then gives away every backup, not only the next one."""
    if repo.role != "writer":
        print(f"chaoskit: note: {job} runs with key {repo.key_id[:8]} of role {repo.role}; "
              "a writer key is enough and cannot read, restore or forget what it ships "
              "(chaoskit backup key add --role writer)", file=sys.stderr)  # fmt: skip


def cmd_watch(args: argparse.Namespace) -> int:
    from chaoskit.dr.protect.repository.agent import BackupAgent
    from chaoskit.journal import Journal

    repo = _open(args)
    _more_role_than_needed(repo, "backup watch")
    journal = (
        Journal(args.journal, source="backup-agent")
        if args.journal
        else Journal.from_env(source="backup-agent")
    )

    def announce(snap: Any) -> None:
        print(
            f"snapshot {snap.short_id} checkpoint {snap.summary.get('checkpoint')} "
            f"step {snap.checkpoint_step}",
            flush=True,
        )

    agent = BackupAgent(
        repo,
        args.dir,
        interval=args.interval,
        tags=tuple(args.tag or ()),
        journal=journal,
        on_backup=announce,
    )
    # SIGTERM (docker stop, systemd) or Ctrl-C ends the agent after the backup in
    # progress; the watcher is in place before "watching" tells a supervisor it is up
    try:
        with StopSignals(agent.stop):
            print(f"watching {agent.dir}", flush=True)
            agent.run(max_backups=args.max_backups, timeout=args.timeout)
    finally:
        if journal is not None:
            journal.close()
    return 0


def _site_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--site {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _pin(args: argparse.Namespace) -> str | None:
    from chaoskit.dr.protect.site_tls import check_pin

    return None if args.tls_pin is None else check_pin(args.tls_pin)


def cmd_replicate(args: argparse.Namespace) -> int:
    """Ship the repository to a DR site: once, or on and on with --watch."""
    from chaoskit.dr.protect.replication import Replicator, SiteClient
    from chaoskit.dr.protect.site import read_token
    from chaoskit.journal import Journal

    endpoint = _site_endpoint(args.site)
    try:
        token = read_token(Path(args.token_file))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--token-file {args.token_file}: {e}") from e
    repo = _open(args)
    _more_role_than_needed(repo, "backup replicate")
    journal = Journal(args.journal, source="replicator") if args.journal else None
    site = SiteClient(endpoint, token, tls_pin=_pin(args))
    replicator = Replicator(repo, site, journal or _NullJournal())
    if not args.watch:
        shipped = replicator.sync_once()
        print(f"shipped {shipped} files; the DR site holds every snapshot", flush=True)
        return 0
    with StopSignals(replicator.stop):  # before the replicator's thread starts
        print(f"replicating {repo.root} to {args.site}", flush=True)
        replicator.start()
        replicator.wait()
    return 0


class _NullJournal:
    def record(self, event: str, **fields: Any) -> None:
        if event in ("detected", "recovered"):
            print(f"{event}: {fields.get('reason') or 'the DR site is reachable again'}",
                  file=sys.stderr, flush=True)  # fmt: skip


def cmd_site(args: argparse.Namespace) -> int:
    """Run a DR site (what ``replicate`` ships to)."""
    from chaoskit.dr.protect.site import main

    if args.root is None or args.token_file is None:
        raise ConfigError("backup site needs --root and --token-file")
    options = [
        f"--{name.replace('_', '-')}={value}"
        for name in ("max_body", "timeout", "tls_cert", "tls_key", "tokens", "retain",
                     "max_connections")
        if (value := getattr(args, name)) is not None
    ]  # else the site's defaults
    return main(["--root", str(args.root), "--token-file", str(args.token_file),
                 "--host", args.host, "--port", str(args.port), *options])  # fmt: skip


def cmd_site_cert(args: argparse.Namespace) -> int:
    """Make the DR site's TLS certificate; print the fingerprint clients pin."""
    from chaoskit.dr.protect.site_tls import make_certificate

    cert, key, pin = make_certificate(args.out, args.host or ["127.0.0.1", "localhost"])
    print(f"certificate {cert}\nkey         {key} (0600)\npin         {pin}")
    print(f"serve with: chaoskit backup site --tls-cert {cert} --tls-key {key} ...")
    print(f"clients:    --tls-pin {pin}")
    return 0


def _refusal_exits_2(func: Any) -> Any:
    """A command refused for the key's role: one line on stderr, exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except PermissionDeniedError as e:
            print(f"chaoskit: refused: {e}", file=sys.stderr)
            return REFUSED_EXIT

    return run


def register(subparsers: Any) -> None:
    """Add ``backup`` and its subcommands to the ``chaoskit`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", "-r", help=f"repository directory (or ${REPOSITORY_ENV})")
    common.add_argument(
        "--password-file",
        metavar="FILE",
        help=f"read the password from FILE (else ${PASSWORD_ENV})",
    )
    backup = subparsers.add_parser(
        "backup",
        help="encrypted, deduplicated recovery points",
        description="The DR engine's backup repository.",
    )
    sub = backup.add_subparsers(dest="backup_command", metavar="COMMAND", required=True)

    def leaf(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=_refusal_exits_2(func))
        return p

    leaf("init", cmd_init, "create a repository")
    p = leaf("run", cmd_run, "back up a directory into a new snapshot")
    p.add_argument("dir", type=Path)
    p.add_argument("--tag", action="append", help="tag the snapshot (repeatable)")
    p.add_argument("--step", type=int, help="checkpoint step (default: from the state file)")
    p.add_argument("--model", help="model name (default: from the directory)")
    p.add_argument("--model-version", help="model version")
    p = leaf("snapshots", cmd_snapshots, "list snapshots")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = leaf("restore", cmd_restore, "restore a snapshot, verified, swapped in atomically")
    p.add_argument("snapshot", help="snapshot id, id prefix, or 'latest'")
    p.add_argument("--target", required=True, type=Path, help="directory to restore as")
    p = leaf("verify", cmd_verify, "compare a live directory with a snapshot")
    p.add_argument("dir", type=Path)
    p.add_argument("--snapshot", default="latest", help="snapshot id or 'latest'")
    p = leaf("check", cmd_check, "check the repository's integrity")
    p.add_argument("--read-data", action="store_true", help="also decrypt and verify all data")
    p = leaf("forget", cmd_forget, "remove snapshots by retention policy (or by id)")
    p.add_argument("snapshots", nargs="*", help="snapshot ids to remove")
    for rule, text in (
        ("last", "the N newest snapshots"),
        ("hourly", "the newest snapshot of each of the last N hours that have one"),
        ("daily", "the newest snapshot of each of the last N days"),
        ("weekly", "the newest snapshot of each of the last N weeks"),
    ):
        p.add_argument(f"--keep-{rule}", type=int, metavar="N", help=f"keep {text}")
    p.add_argument(
        "--keep-within",
        metavar="DURATION",
        help="keep snapshots this close to the newest one, e.g. 7d, 12h",
    )
    p.add_argument(
        "--keep-tag", action="append", metavar="TAG", help="keep snapshots with this tag"
    )
    p.add_argument("--prune", action="store_true", help="prune afterwards")
    p.add_argument("--dry-run", "-n", action="store_true", help="only show what would go")
    leaf("prune", cmd_prune, "remove data no snapshot needs")
    p = leaf("watch", cmd_watch, "back up each new checkpoint as soon as it is complete")
    p.add_argument("dir", type=Path, help="CheckpointManager directory")
    p.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds")
    p.add_argument("--tag", action="append")
    p.add_argument("--journal", help="journal to record recovery points in")
    p.add_argument("--max-backups", type=int, help="stop after N backups")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")

    p = leaf("replicate", cmd_replicate, "ship the repository to a DR site (append-only)")
    p.add_argument("--site", required=True, metavar="HOST:PORT", help="the DR site")
    p.add_argument("--token-file", required=True, metavar="FILE", help="its bearer token")
    p.add_argument("--watch", action="store_true", help="keep shipping new snapshots")
    p.add_argument("--journal", help="journal to record replication and outages in")
    p.add_argument("--tls-pin", metavar="sha256:HEX", help="speak HTTPS; the site's cert pin")
    p = sub.add_parser("site", help="run a DR site", description="Run a DR site.")
    p.set_defaults(func=cmd_site)
    p.add_argument("--root", type=Path, help="directory to store into")
    p.add_argument("--token-file", type=Path, help="bearer token clients need")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate")
    p.add_argument("--tls-key", type=Path, help="... and this private key")
    p.add_argument("--tokens", type=Path, help="more tokens, '<role> <token>' lines "
                   "(writer, reader, admin); --token-file is the writer's")  # fmt: skip
    p.add_argument("--retain", metavar="DURATION",
                   help="retention lock: no file younger is deleted, even by admin")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8475)
    p.add_argument(
        "--max-body", type=int, metavar="BYTES", help="refuse larger uploads with 413 (256 MiB)"
    )
    p.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="drop a connection silent this long (60)"
    )
    p.add_argument("--max-connections", type=int, metavar="N",
                   help="connections served at once; more are closed at accept (64)")  # fmt: skip
    site_sub = p.add_subparsers(dest="site_command", metavar="COMMAND")
    cert = site_sub.add_parser("cert", help="make the site's TLS certificate and key",
                               description=cmd_site_cert.__doc__)  # fmt: skip
    cert.add_argument("--out", type=Path, required=True, help="directory for site.crt/site.key")
    cert.add_argument("--host", action="append",
                      help="a host name or address clients use (repeatable)")  # fmt: skip
    cert.set_defaults(func=cmd_site_cert)

    key = sub.add_parser("key", help="manage key files (passwords)")
    ksub = key.add_subparsers(dest="key_command", metavar="COMMAND", required=True)
    for name, func, text in (
        ("add", cmd_key_add, "add a password"),
        ("list", cmd_key_list, "list key files"),
        ("remove", cmd_key_remove, "remove a key file"),
        ("passwd", cmd_key_passwd, "change the current password"),
    ):
        p = ksub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(func=_refusal_exits_2(func))
        if name == "add":
            p.add_argument(
                "--role",
                choices=ROLES,
                default="admin",
                help="what the key may do: admin (everything, the default, as before roles), "
                "operator (backup, restore, check, forget, prune), writer (add snapshots "
                "only; cannot read back), reader (list, verify, restore, check)",
            )
        if name in ("add", "passwd"):
            p.add_argument(
                "--new-password-file",
                metavar="FILE",
                help=f"new password from FILE (else ${NEW_PASSWORD_ENV})",
            )
        if name == "remove":
            p.add_argument("key_id", help="key id or unique prefix")
