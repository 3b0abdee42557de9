"""``chaoskit run [--stack chaoskit.toml] [--backend docker] [-- PYTEST ARGS]``.

Runs the standard suite (:mod:`chaoskit.suite`) through pytest against the stack file's
stack (default: ``./chaoskit.toml`` when it exists, else the reference stack) and writes
the report under ``--report-dir`` (default ``reports``), exactly as the plugin does.
The stack file is validated first, so a mistake in it is one line, before pytest starts.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from chaoskit.stack.backend import BACKENDS


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the standard suite against a stack (a stack file, or the reference stack)",
        description="Run chaoskit's standard suite with pytest; extra pytest arguments go "
        "after --, e.g. chaoskit run --stack chaoskit.toml -- -k kill",
    )
    run.add_argument("--stack", metavar="PATH",
                     help="stack file (default: ./chaoskit.toml if present, else the "
                     "reference stack)")  # fmt: skip
    run.add_argument("--backend", choices=BACKENDS, default=None,
                     help="where the stack runs (default: process)")  # fmt: skip
    run.add_argument("--report-dir", default="reports", metavar="DIR",
                     help="where run reports go (default: reports)")  # fmt: skip
    run.add_argument("--seed", type=int, help="seed for the faults' random choices")
    run.add_argument("pytest_args", nargs=argparse.REMAINDER,
                     help="after --: arguments passed to pytest as they are")  # fmt: skip
    run.set_defaults(func=run_suite)


def suite_arguments(args: argparse.Namespace) -> list[str]:
    """The pytest command line ``chaoskit run`` stands for."""
    stack = args.stack or ("chaoskit.toml" if Path("chaoskit.toml").is_file() else None)
    argv = ["--pyargs", "chaoskit.suite", "-p", "no:cacheprovider", "-rs",
            f"--rootdir={os.getcwd()}", f"--chaos-report-dir={Path(args.report_dir).absolute()}"]
    if stack is not None:
        from chaoskit.stackfile import load_stack_file

        load_stack_file(stack)  # a mistake is one ConfigError line, before pytest starts
        argv.append(f"--chaos-stack={Path(stack).absolute()}")
    if args.backend:
        argv.append(f"--chaos-backend={args.backend}")
    if args.seed is not None:
        argv.append(f"--chaos-seed={args.seed}")
    extra = list(args.pytest_args)
    return argv + (extra[1:] if extra[:1] == ["--"] else extra)


def run_suite(args: argparse.Namespace) -> int:
    import pytest

    return int(pytest.main(suite_arguments(args)))
