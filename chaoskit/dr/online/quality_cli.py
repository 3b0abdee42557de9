"""``chaoskit quality``: judge the versions a model server holds on labelled data.

Each version (ascending; every AVAILABLE one unless ``--versions`` names some) answers
the labelled set over REST, and the quality gate (:mod:`chaoskit.dr.online.quality`)
decides promote, breach or inconclusive against the best version promoted before it.
Exit code 0: the newest version judged is promoted; 1: it breached or the evidence was
inconclusive (never a pass); 2: bad input (one line naming it).  Cheap to import.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from chaoskit.errors import ChaosKitError, ConfigError

USAGE_EXIT, FAILED_EXIT = 2, 1
REFERENCE = "reference"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "quality",
        help="score a model server's versions on labelled data; promote, breach or inconclusive",
        description="Score each version a TF Serving-compatible server holds on a labelled "
        "set and judge it against the best earlier one.  Exit 0 newest promoted, 1 breach "
        "or inconclusive, 2 bad input.",
    )  # fmt: skip
    p.add_argument("--server", required=True, metavar="HOST:PORT", help="REST address")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--labelled", required=True, metavar="FILE",
                   help='JSON {"instances": [...], "targets"|"labels": [...]}, or '
                   f'"{REFERENCE}": chaoskit\'s reference model\'s held-out set')  # fmt: skip
    p.add_argument("--task", choices=("regression", "classification"), default="regression")
    p.add_argument("--versions", metavar="N,N", help="versions to judge (default: every "
                   "AVAILABLE one)")  # fmt: skip
    p.add_argument("--margin", type=float, default=0.1,
                   help="regression: relative error increase allowed; classification: "
                   "accuracy points (default 0.1)")  # fmt: skip
    p.add_argument("--floor", type=float, help="an absolute bound every version must meet")
    p.add_argument("--min-samples", type=int, help="answered instances a verdict needs "
                   "(default: the whole set)")  # fmt: skip
    p.add_argument("--output", help="the output to score, when the signature has several")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_quality)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--server must be HOST:PORT, got {text!r}")
    return host, int(port)


def _versions(text: str) -> list[int]:
    try:
        versions = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise ConfigError(f"--versions must be version numbers separated by commas, got "
                          f"{text!r}") from None  # fmt: skip
    if any(v < 0 for v in versions):
        raise ConfigError(f"--versions must be version numbers >= 0, got {text!r}")
    return versions


def run_quality(args: argparse.Namespace) -> int:
    from chaoskit.dr.online import quality
    from chaoskit.serving.client import ServingClient

    try:
        host, port = _address(args.server)
        if args.labelled == REFERENCE:
            labelled = quality.reference_labelled_set()
        else:
            labelled = quality.read_labelled_set(Path(args.labelled), task=args.task,
                                                 where="--labelled")  # fmt: skip
        client = ServingClient(host, port, args.model, timeout=30)
        versions = _versions(args.versions) if args.versions else _available(client)
        gate = quality.QualityGate(labelled.task, margin=args.margin, floor=args.floor,
                                   min_samples=args.min_samples or len(labelled))  # fmt: skip
        quality.check_labelled(labelled, client, versions[-1])
        verdicts, previous = [], None
        for version in versions:
            got = quality.answers(client, labelled, version=version, output=args.output)
            verdict = gate.judge(version, got.outputs, labelled, previous)
            verdicts.append((verdict, got.error))
            if verdict.decision == quality.PROMOTE:
                previous = got.outputs
    except ChaosKitError as e:
        print(f"chaoskit: error: {e}", file=sys.stderr)
        return USAGE_EXIT
    if args.json:
        print(json.dumps([{**v.fields(), "error": error} for v, error in verdicts], indent=1))
    else:
        print(f"{len(labelled)} labelled examples ({labelled.source}), {labelled.task}")
        print(f"{'version':>8} {'decision':<12} {'score':>10} {'psi':>7} {'ks':>6}  reason")
        for v, error in verdicts:
            score = "-" if v.score is None else f"{v.score:.4g}"
            psi = "-" if v.psi is None else f"{v.psi:.3f}"
            ks = "-" if v.ks is None else f"{v.ks:.3f}"
            why = v.reason if error is None else f"{v.reason} ({error})"
            print(f"{v.version:>8} {v.decision:<12} {score:>10} {psi:>7} {ks:>6}  {why}")
    return 0 if verdicts[-1][0].decision == quality.PROMOTE else FAILED_EXIT


def _available(client: Any) -> list[int]:
    versions: list[int] = client.available_versions()
    if not versions:
        raise ConfigError(f"model {client.model!r} has no AVAILABLE version on --server "
                          f"{client.host}:{client.port} (or it does not answer)")  # fmt: skip
    return versions
