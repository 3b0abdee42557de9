"""Resolve what a storage fault names into a real path inside the stack's data directory.

Targets are written relative to the model store so experiments stay portable:

- ``model:latest/variables/variables.data-00000-of-00001`` — a file of the newest version
  (``model:<N>/...`` for version N, ``model:latest`` for the version directory itself);
- ``checkpoint:latest`` — the main file of the newest checkpoint, found through the
  stack's checkpoint format (``keras`` / ``files``: the file itself; ``tf``: its first
  data shard); for ``tf`` also ``checkpoint:latest.index`` / ``checkpoint:latest.data``
  — the newest checkpoint named by CheckpointManager's state file — and
  ``checkpoint:state``, that state file;
- a plain relative path (``models/reference/7/saved_model.pb``) — a file in the data
  directory.

A target that starts with a word and a colon (``checkpont:latest.data``) names a prefix;
one that is not ``model:`` or ``checkpoint:`` is an unknown prefix, refused with the
valid ones, rather than taken as a file name that does not exist.  A file whose name
does contain such a colon is named with a leading ``./`` (``./notes:v2``).

A target that resolves outside the data directory is refused: a fault must never touch
files the stack does not own.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from chaoskit.dr.protect.checkpoints import TFFormat
from chaoskit.dr.protect.repository.source import STATE_FILE, parse_checkpoint_state
from chaoskit.errors import FaultError
from chaoskit.model import version_dirs
from chaoskit.stack.protocol import within

TF_TARGETS = ("latest.index", "latest.data", "state")
PREFIXES = ("model:", "checkpoint:")
VALID_TARGETS = (
    "model:latest[/<path>], model:<version>[/<path>], checkpoint:latest, and for tf "
    "checkpoints checkpoint:latest.index, checkpoint:latest.data, checkpoint:state, or a "
    "plain relative path for a file in the data directory"
)
_PREFIX = re.compile(r"([A-Za-z][\w.-]*:)")


def _unknown_prefix(target: str) -> FaultError | None:
    """The error for a ``word:`` prefix that is not one of :data:`PREFIXES`, else None."""
    match = _PREFIX.match(target)
    if match is None or match.group(1) in PREFIXES:
        return None
    prefix = match.group(1)
    close = difflib.get_close_matches(prefix, PREFIXES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return FaultError(
        f"{target!r}: unknown target prefix {prefix!r} ({hint}valid: {VALID_TARGETS})"
    )


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


def _checkpoint_target(stack: Any, target: str) -> Path:
    """What a ``checkpoint:`` target names, in the stack's checkpoint format (tf when the
    stack does not say)."""
    if getattr(stack, "checkpoint_dir", None) is None:
        raise FaultError(f"{target!r}: the stack has no checkpoint directory")
    directory = Path(stack.checkpoint_dir)
    fmt = getattr(stack, "checkpoint_format", None) or TFFormat()
    what = target[len("checkpoint:") :]
    if what in TF_TARGETS and isinstance(fmt, TFFormat):
        if what == "state":
            return directory / STATE_FILE
        prefix = latest_checkpoint_prefix(directory)
        suffix = ".index" if what == "latest.index" else ".data-00000-of-00001"
        return prefix.with_name(prefix.name + suffix)
    if what == "latest":
        latest = fmt.latest(directory)
        if latest is None:
            raise FaultError(f"{target!r}: no {fmt.describe()} checkpoint in {directory}")
        return directory / fmt.main_file(latest)
    if what in TF_TARGETS:
        raise FaultError(
            f"{target!r} is for CheckpointManager ('tf') checkpoints; this stack's are "
            f"{fmt.describe()}: use 'checkpoint:latest'"
        )
    known = ", ".join(f"checkpoint:{t}" for t in ("latest", *TF_TARGETS))
    raise FaultError(f"{target!r}: unknown checkpoint target (known: {known})")


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
        path = _checkpoint_target(stack, target)
    else:
        error = _unknown_prefix(target)
        if error is not None:
            raise error
        path = data_dir / target
    resolved = Path(os.path.realpath(path))
    roots = [Path(os.path.realpath(r)) for r in getattr(stack, "storage_roots", [data_dir])]
    if not within(resolved, roots):
        where = ", ".join(str(r) for r in roots)
        raise FaultError(f"{target!r} resolves to {resolved}, outside the stack's storage "
                         f"({where})")  # fmt: skip
    return resolved
