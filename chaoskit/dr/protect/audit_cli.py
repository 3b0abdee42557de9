"""``chaoskit audit ...``: check and read a repository's audit log.

Neither command needs a password: the log is signed, not encrypted, so anyone who can
read the repository directory can check who did what (an auditor holds no key).
``verify`` exits 1 naming the first bad entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaoskit.errors import ConfigError


def _repo(args: argparse.Namespace) -> Path:
    from chaoskit.dr.protect.backup_cli import _repo_path

    root = Path(_repo_path(args))
    if not (root / "config").is_file():
        raise ConfigError(f"{root} is not a chaoskit repository (no config file)")
    return root


def _site_checkpoint(args: argparse.Namespace) -> dict[str, Any] | None:
    """The DR site's witness checkpoint: from its directory, or over HTTP(S) with a token."""
    if args.site is None:
        return None
    from chaoskit.dr.protect.witness import load_checkpoint

    if Path(args.site).is_dir():
        return load_checkpoint(Path(args.site))
    from chaoskit.dr.protect.backup_cli import _site_endpoint
    from chaoskit.dr.protect.replication import SiteClient
    from chaoskit.dr.protect.site import read_token

    if args.token_file is None:
        raise ConfigError(f"--site {args.site} is an address: it needs --token-file")
    try:
        token = read_token(Path(args.token_file))
    except (OSError, ValueError) as e:
        raise ConfigError(f"token file {args.token_file}: {e}") from e
    from chaoskit.dr.protect.backup_cli import _pin

    return SiteClient(_site_endpoint(args.site), token, tls_pin=_pin(args)).witness()


SHOWN_REFUSALS = 20


def _print_refusals(access_dir: Path) -> None:
    """The DR site's newest refused requests, one line each: who tried what, and why not."""
    from chaoskit.dr.protect.repository.audit import read_log

    refused = [e for e in read_log(access_dir) if e.get("outcome") == "refused"]
    if len(refused) > SHOWN_REFUSALS:
        print(f"  ... {len(refused) - SHOWN_REFUSALS} older refusals (audit show --site)")
    for e in refused[-SHOWN_REFUSALS:]:
        d = e.get("details") or {}
        when = datetime.fromtimestamp(float(e.get("time", 0)), UTC).isoformat(timespec="seconds")
        print(f"  refused  {when}  {d.get('client', '?')}  {d.get('method', '?')} "
              f"{d.get('path', '?')}  {d.get('status', '?')}: {d.get('reason', '')}")


def cmd_verify(args: argparse.Namespace) -> int:
    from chaoskit.dr.protect.repository.audit import verify_log
    from chaoskit.dr.protect.witness import WITNESS_DIR, compare_with_witness

    root = _repo(args)
    verdict = verify_log(root)
    if not verdict.ok:
        print(f"audit log of {root}: BROKEN: {verdict.problem}", file=sys.stderr)
        return 1
    checkpoint = _site_checkpoint(args)
    if checkpoint is not None:
        problem = compare_with_witness(root, checkpoint, pinned=args.site_key)
        if problem is not None:
            print(f"audit log of {root}: BROKEN: {problem}", file=sys.stderr)
            return 1
    if args.site is not None and Path(args.site).is_dir():
        access = verify_log(Path(args.site) / WITNESS_DIR)
        if access.entries and not access.ok:
            print(f"DR site access log of {args.site}: BROKEN: {access.problem}", file=sys.stderr)
            return 1
        print(f"DR site access log of {args.site}: {access.entries} refused requests, "
              "chain and signatures intact")  # fmt: skip
        _print_refusals(Path(args.site) / WITNESS_DIR)
    witnessed = "" if checkpoint is None else (
        f"; the DR site witnessed the first {checkpoint['length']}")
    print(f"audit log of {root}: {verdict.entries} entries, chain and signatures intact, "
          f"head {verdict.head[:16]}{witnessed}")  # fmt: skip
    return 0


def _matches(entry: dict[str, Any], args: argparse.Namespace, since: float | None) -> bool:
    return (
        (args.op is None or entry.get("op") == args.op)
        and (args.outcome is None or entry.get("outcome") == args.outcome)
        and (args.key is None or str(entry.get("key", "")).startswith(args.key))
        and (since is None or float(entry.get("time", 0)) >= since)
    )


def cmd_show(args: argparse.Namespace) -> int:
    from chaoskit.dr.protect.repository.audit import read_log
    from chaoskit.dr.protect.witness import WITNESS_DIR
    from chaoskit.durations import parse_duration

    since = None if args.since is None else time.time() - parse_duration(args.since, what="--since")
    root = Path(args.site) / WITNESS_DIR if args.site else _repo(args)
    entries = [e for e in read_log(root) if _matches(e, args, since)]
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    for e in entries:
        when = datetime.fromtimestamp(float(e.get("time", 0)), UTC).isoformat(timespec="seconds")
        details = " ".join(f"{k}={v}" for k, v in (e.get("details") or {}).items()
                           if k != "signer")  # fmt: skip
        print(f"{e.get('seq', '?'):>6}  {when}  {str(e.get('key', '?'))[:8]}  "
              f"{e.get('role', '?'):<8}  {e.get('op', '?'):<10}  {e.get('outcome', '?'):<7}  "
              f"{details}")  # fmt: skip
    print(f"{len(entries)} entries")
    return 0


def register(subparsers: Any) -> None:
    from chaoskit.dr.protect.backup_cli import REPOSITORY_ENV

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", "-r", help=f"repository directory (or ${REPOSITORY_ENV})")
    audit = subparsers.add_parser(
        "audit", help="the repository's tamper-evident audit log",
        description="Who did what to the backup repository: a hash chain signed by the keys.",
    )  # fmt: skip
    sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    p = sub.add_parser("verify", parents=[common], help="check the chain and every signature")
    p.add_argument("--site", metavar="DIR|HOST:PORT",
                   help="also compare with what the DR site witnessed")  # fmt: skip
    p.add_argument("--token-file", metavar="FILE", help="the DR site's token (--site address)")
    p.add_argument("--tls-pin", metavar="sha256:HEX", help="speak HTTPS; the site's cert pin")
    p.add_argument("--site-key", metavar="BASE64",
                   help="the DR site's witness key to pin (else the one it names)")  # fmt: skip
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("show", parents=[common], help="list entries")
    p.add_argument("--op", help="only this operation, e.g. backup, restore, 'key add'")
    p.add_argument("--outcome", choices=("ok", "refused", "failed"))
    p.add_argument("--key", help="only entries by this key (id or prefix)")
    p.add_argument("--since", metavar="DURATION", help="only the last DURATION, e.g. 1h")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--site", metavar="DIR", help="the DR site's access log instead (refusals)")
    p.set_defaults(func=cmd_show)
