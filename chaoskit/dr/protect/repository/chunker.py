"""Where to cut a file into chunks.

Tensor bundle data shards are cut at the tensor boundaries their ``.index`` gives, and
large tensors are split into fixed pieces counted from the tensor's own start, so a
tensor that did not change between two checkpoints yields the same chunks even when
other tensors moved.  Other files get fixed-size chunks.
"""

from __future__ import annotations

from pathlib import Path

from chaoskit.errors import IntegrityError
from chaoskit.tfbundle import (
    BundleIndex,
    data_shard_of,
    read_bundle_index,
    tensor_spans,
)

FIXED_CHUNK = 1 << 20
MAX_TENSOR_PIECE = 4 << 20


def _split(offset: int, length: int, piece: int) -> list[tuple[int, int]]:
    return [(o, min(piece, offset + length - o)) for o in range(offset, offset + length, piece)]


def fixed_plan(size: int, piece: int = FIXED_CHUNK) -> list[tuple[int, int]]:
    return _split(0, size, piece)


class Chunker:
    """Plans chunk boundaries, caching each bundle ``.index`` it parses."""

    def __init__(self, *, max_piece: int = MAX_TENSOR_PIECE, fixed: int = FIXED_CHUNK) -> None:
        self.max_piece = max_piece
        self.fixed = fixed
        self._indexes: dict[Path, BundleIndex | None] = {}
        self.bundle_files = 0

    def _index(self, path: Path) -> BundleIndex | None:
        if path not in self._indexes:
            try:
                self._indexes[path] = read_bundle_index(path)
            except (OSError, IntegrityError):
                self._indexes[path] = None
        return self._indexes[path]

    def plan(self, path: Path, size: int) -> list[tuple[int, int]]:
        """(offset, length) of each chunk of *path*, covering exactly *size* bytes."""
        shard = data_shard_of(path)
        index = self._index(shard[0]) if shard else None
        if shard is None or index is None:
            return fixed_plan(size, self.fixed)
        self.bundle_files += 1
        plan: list[tuple[int, int]] = []
        pos = 0
        for offset, length in tensor_spans(index, shard[1], size):
            if offset > pos:
                plan.extend(_split(pos, offset - pos, self.fixed))
            plan.extend(_split(offset, length, self.max_piece))
            pos = offset + length
        if pos < size:
            plan.extend(_split(pos, size - pos, self.fixed))
        return plan
