"""What a backed-up directory is: checkpoint step and creation time, model name and version.

A CheckpointManager directory has a ``checkpoint`` state file (text protobuf) naming the
newest checkpoint and the time each checkpoint was written; that time, not the backup's,
is the recovery point's time.  A SavedModel version directory (``base/<int>/``) gives the
model name and version.  Otherwise the newest file mtime stands in for the creation time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "checkpoint"
_FIELD = re.compile(r'^\s*(\w+)\s*:\s*(?:"((?:[^"\\]|\\.)*)"|([-+0-9.eE]+))\s*$')


@dataclass(frozen=True)
class CheckpointState:
    """The parsed ``checkpoint`` state file of a CheckpointManager directory."""

    latest: str
    time: float | None
    all_paths: tuple[str, ...]
    all_times: tuple[float, ...] = ()

    @property
    def step(self) -> int | None:
        return step_of_prefix(self.latest)

    def time_of(self, path: str) -> float | None:
        """When the checkpoint at *path* was written, as the state file records it."""
        return dict(zip(self.all_paths, self.all_times, strict=False)).get(path)


def step_of_prefix(prefix: str) -> int | None:
    """The checkpoint number CheckpointManager appends to its prefix (``ckpt-40`` -> 40)."""
    match = re.search(r"(\d+)$", prefix)
    return int(match.group(1)) if match else None


def parse_checkpoint_state(text: str) -> CheckpointState | None:
    latest = None
    paths: list[str] = []
    stamps: list[float] = []
    for line in text.splitlines():
        match = _FIELD.match(line)
        if not match:
            continue
        key, string, number = match.groups()
        if key == "model_checkpoint_path" and string is not None:
            latest = string
        elif key == "all_model_checkpoint_paths" and string is not None:
            paths.append(string)
        elif key == "all_model_checkpoint_timestamps" and number is not None:
            stamps.append(float(number))
    if not latest:
        return None
    when = dict(zip(paths, stamps, strict=False)).get(latest)
    return CheckpointState(
        latest=latest, time=when, all_paths=tuple(paths), all_times=tuple(stamps)
    )


def read_checkpoint_state(directory: Path) -> CheckpointState | None:
    try:
        return parse_checkpoint_state((directory / STATE_FILE).read_text("utf-8", "replace"))
    except OSError:
        return None


@dataclass(frozen=True)
class SourceInfo:
    time: float
    checkpoint_step: int | None = None
    model_name: str | None = None
    model_version: str | None = None


def describe_source(directory: Path, newest_mtime: float) -> SourceInfo:
    """Best description of *directory*; *newest_mtime* is the fallback creation time."""
    state = read_checkpoint_state(directory)
    if state is not None:
        when = state.time
        if when is None:
            try:
                when = os.stat(directory / (state.latest + ".index")).st_mtime
            except OSError:
                when = newest_mtime
        return SourceInfo(time=when, checkpoint_step=state.step, model_name=directory.name)
    if directory.name.isdigit() and (directory / "saved_model.pb").exists():
        return SourceInfo(
            time=newest_mtime, model_name=directory.parent.name, model_version=directory.name
        )
    return SourceInfo(time=newest_mtime, model_name=directory.name)
