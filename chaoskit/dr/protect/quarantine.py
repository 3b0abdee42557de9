"""Set damaged or unverified files aside without deleting them.

The store guard moves what it must not leave in place (a model version that does not
match its producer's manifest, checkpoints newer than the one restored) into a hidden
directory *beside* the watched one, so servers and trainers stop seeing it while the
files stay for a post-mortem.  Nothing here deletes anything.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from chaoskit.atomic import fsync_dir


def quarantine_dir(watched: Path) -> Path:
    """``<parent>/.<name>-quarantine``: outside *watched*, on the same file system."""
    return watched.with_name(f".{watched.name}-quarantine")


def move_aside(root: Path, rels: Iterable[str], dest: Path) -> list[str]:
    """Move each existing ``root/<rel>`` (file or directory) to ``dest/<rel>``; return
    the relative names moved.  A name already in *dest* gets a time suffix (never
    overwritten); a move across file systems copies, then removes the original."""
    moved = []
    for rel in rels:
        source = root / rel
        if not source.exists():
            continue
        target = dest / rel
        if target.exists():
            target = target.with_name(f"{target.name}.{time.time_ns()}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.move(str(source), str(target))
        moved.append(rel)
    if moved:
        fsync_dir(root)
        fsync_dir(dest)
    return moved
