"""``python -m chaoskit.trainer``: the reference trainer process.

Exit status: 0 after SIGTERM/SIGINT (the current step finishes first), 1 when the
newest checkpoint cannot be restored (one line on stderr naming the file), 2 for bad
options.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from chaoskit.signals import StopSignals

PROG = "chaoskit-trainer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description="Train the chaoskit reference model.")
    p.add_argument("--model-name", default="reference")
    p.add_argument("--model-base-path", required=True, type=Path)
    p.add_argument("--checkpoint-dir", required=True, type=Path)
    p.add_argument("--checkpoint-every", type=int, default=20, metavar="N")
    p.add_argument("--export-every", type=int, default=100, metavar="M")
    p.add_argument("--max-to-keep", type=int, default=5, metavar="K")
    p.add_argument("--step-delay", type=float, default=0.05, metavar="SECONDS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--status-file", type=Path, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this global step")
    p.add_argument("--control-file", type=Path, default=None,
                   help="a training fault's instructions, looked at every step")  # fmt: skip
    args = p.parse_args(argv)
    for name in ("checkpoint_every", "export_every", "max_to_keep"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.step_delay < 0:
        p.error(f"--step-delay must be >= 0, got {args.step_delay}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    StopSignals(stop.set).start()  # before TensorFlow starts its threads: chaoskit.signals

    from chaoskit.journal import Journal
    from chaoskit.trainer.loop import CheckpointLoadError, Trainer, TrainerConfig

    config = TrainerConfig(
        model_name=args.model_name,
        model_base_path=args.model_base_path,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        export_every=args.export_every,
        max_to_keep=args.max_to_keep,
        step_delay=args.step_delay,
        seed=args.seed,
        status_file=args.status_file,
        max_steps=args.max_steps,
        control_file=args.control_file,
    )
    journal = Journal.from_env(source="trainer")
    try:
        trainer = Trainer(config, journal)
        return trainer.run(stop)
    except CheckpointLoadError as e:
        if journal is not None:
            journal.record(
                "trainer.load_failed", path=e.path, error_type=e.error_type, error=e.error
            )
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    finally:
        if journal is not None:
            journal.close()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
