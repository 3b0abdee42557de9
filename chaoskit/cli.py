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

_COMMANDS: tuple[str, ...] = (
    "chaoskit.dr.backup_cli",
    "chaoskit.proxy.cli",
    "chaoskit.report.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaoskit",
        description="Chaos and disaster-recovery testing for TensorFlow serving stacks.",
    )
    from chaoskit import __version__

    parser.add_argument("--version", action="version", version=f"chaoskit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name + ".").startswith(e.name + "."):  # not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
