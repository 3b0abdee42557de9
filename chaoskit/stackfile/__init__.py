"""Stack files: the user's own stack (model, trainer, serving, checkpoints, DR policy)."""

from __future__ import annotations

from chaoskit.stackfile.load import DEFAULT_NAME, load_stack_file
from chaoskit.stackfile.schema import StackFile

__all__ = ["DEFAULT_NAME", "StackFile", "load_stack_file"]
