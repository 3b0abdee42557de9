"""Resolve what a storage fault names into a real path inside the stack's data directory.

Targets are written relative to the model store so experiments stay portable:

- ``model:latest/variables/variables.data-00000-of-00001`` — a file of the newest version
  (``model:<N>/...`` for version N, ``model:latest`` for the version directory itself);
- ``checkpoint:latest.index`` / ``checkpoint:latest.data`` — the newest checkpoint named by
  CheckpointManager's state file; ``checkpoint:state`` — that state file;
- anything else — a path relative to the data directory.

A target that resolves outside the data directory is refused: a fault must never touch
files the stack does not own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chaoskit.dr.repository.source import STATE_FILE, parse_checkpoint_state
from chaoskit.errors import FaultError
from chaoskit.model import version_dirs


def latest_checkpoint_prefix(checkpoint_dir: Path) -> Path:
    """The prefix the ``checkpoint`` state file names (no TensorFlow needed)."""
    state_file = checkpoint_dir / STATE_FILE
    try:
        state = parse_checkpoint_state(state_file.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise FaultError(f"no readable checkpoint state file at {state_file}") from e
    if state is None:
        raise FaultError(f"{state_file} names no checkpoint")
    prefix = Path(state.latest)
    return prefix if prefix.is_absolute() else checkpoint_dir / prefix


def resolve_target(stack: Any, target: str) -> Path:
    """The absolute path *target* names in *stack* (see the module docstring)."""
    data_dir = Path(stack.data_dir).resolve()
    if target.startswith("model:"):
        version, _, rest = target[len("model:") :].partition("/")
        versions = version_dirs(stack.model_base_path)
        if not versions:
            raise FaultError(f"{target!r}: the model store {stack.model_base_path} has no version")
        if version == "latest":
            number = max(versions)
        elif version.isdigit() and int(version) in versions:
            number = int(version)
        else:
            raise FaultError(f"{target!r}: no version {version!r} in {stack.model_base_path}")
        path = versions[number] / rest if rest else versions[number]
    elif target.startswith("checkpoint:"):
        what = target[len("checkpoint:") :]
        if what == "state":
            path = Path(stack.checkpoint_dir) / "checkpoint"
        elif what in ("latest.index", "latest.data"):
            prefix = latest_checkpoint_prefix(Path(stack.checkpoint_dir))
            suffix = ".index" if what == "latest.index" else ".data-00000-of-00001"
            path = prefix.with_name(prefix.name + suffix)
        else:
            known = "checkpoint:latest.index, checkpoint:latest.data, checkpoint:state"
            raise FaultError(f"{target!r}: unknown checkpoint target (known: {known})")
    else:
        path = data_dir / target
    resolved = Path(os.path.realpath(path))
    if resolved != data_dir and data_dir not in resolved.parents:
        raise FaultError(f"{target!r} resolves to {resolved}, outside the model store {data_dir}")
    return resolved
