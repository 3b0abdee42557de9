"""How far a trainer got, read from what it leaves on disk (no TensorFlow needed).

The reference trainer writes a status file (its step and last checkpoint); any
CheckpointManager directory names its newest checkpoint in the ``checkpoint`` state
file.  The trainer's step at a fault is the newest of what these say, so the RPO in
steps compares it with the step the trainer resumed at.
"""

from __future__ import annotations

import json
from pathlib import Path

from chaoskit.dr.protect.repository.source import STATE_FILE, parse_checkpoint_state


def newest_step(status_file: Path | None, checkpoint_dir: Path | None) -> int | None:
    """The largest step the status file or the checkpoint state file names; None if neither."""
    steps = []
    if status_file is not None:
        try:
            status = json.loads(status_file.read_text())
            steps.append(int(status["step"]))
            steps.append(int((status.get("last_checkpoint") or {}).get("step", -1)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    if checkpoint_dir is not None:
        try:
            state = parse_checkpoint_state((checkpoint_dir / STATE_FILE).read_text())
            if state is not None and state.step is not None:
                steps.append(state.step)
        except (OSError, UnicodeDecodeError):
            pass
    return max(steps) if steps else None
