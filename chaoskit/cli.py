"""The ``chaoskit`` console command.

Subcommands live beside the code they drive; each module listed in ``_COMMANDS`` has
``register(subparsers)`` that adds its parser and sets ``func`` (args -> exit code).
Modules must be cheap to import: heavy libraries are imported inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from chaoskit.errors import ChaosKitError

_COMMANDS: dict[str, str] = {
    "backup": "chaoskit.dr.protect.backup_cli",
    "audit": "chaoskit.dr.protect.audit_cli",
    "proxy": "chaoskit.proxy.cli",
    "report": "chaoskit.report.cli",
    "gate": "chaoskit.report.cli",
    "run": "chaoskit.suite.cli",
    "init": "chaoskit.stackfile.init",
    "harden-check": "chaoskit.harden.cli",
    "quality": "chaoskit.dr.online.quality_cli",
    "swarm": "chaoskit.stack.swarm_cli",
}
"""Command -> the module that registers it.  Only the module of the command being run is
imported (``chaoskit backup`` must start fast); help imports them all."""


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaoskit",
        description="Chaos and disaster-recovery testing for TensorFlow serving stacks.",
    )
    from chaoskit import __version__

    parser.add_argument("--version", action="version", version=f"chaoskit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((arg for arg in argv if not arg.startswith("-")), None)
    modules = (
        [_COMMANDS[wanted]] if wanted in _COMMANDS else list(dict.fromkeys(_COMMANDS.values()))
    )
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except ChaosKitError as e:
        print(f"chaoskit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("chaoskit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
