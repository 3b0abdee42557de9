"""The index: which pack, offset and length hold each chunk.

Each backup (and each prune) adds one sealed index file listing the chunks it made
durable, sealed with the index key every role holds (writers need it to deduplicate);
the in-memory index is the union of all index files.  An index file is written
only after the packs it names were fsynced, so it never points at missing data.  A
damaged index file is reported and its packs are re-read from their own headers, so one
flipped byte in an index does not make data unreachable.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chaoskit.atomic import atomic_write_bytes
from chaoskit.dr.protect.repository.crypto import Cipher
from chaoskit.dr.protect.repository.keyring import KeyRing
from chaoskit.dr.protect.repository.packs import BlobLocation
from chaoskit.errors import IntegrityError

_MAGIC = b"CKIX\x01"
_PACK = struct.Struct("<16sI")
_ENTRY = struct.Struct("<32sQII")


def _aad(file_id: str) -> bytes:
    return b"chaoskit-index\0" + file_id.encode()


def encode_index(blobs: Iterable[tuple[bytes, BlobLocation]]) -> bytes:
    by_pack: dict[str, list[tuple[bytes, BlobLocation]]] = {}
    for chunk_id, loc in blobs:
        by_pack.setdefault(loc.pack, []).append((chunk_id, loc))
    parts = [_MAGIC]
    for pack, entries in by_pack.items():
        parts.append(_PACK.pack(bytes.fromhex(pack), len(entries)))
        parts.extend(_ENTRY.pack(i, loc.offset, loc.length, loc.raw_length) for i, loc in entries)
    return b"".join(parts)


def decode_index(raw: bytes, what: str) -> dict[bytes, BlobLocation]:
    if not raw.startswith(_MAGIC):
        raise IntegrityError(f"{what}: unknown index format")
    out: dict[bytes, BlobLocation] = {}
    pos = len(_MAGIC)
    try:
        while pos < len(raw):
            pack_raw, count = _PACK.unpack_from(raw, pos)
            pos += _PACK.size
            pack = pack_raw.hex()
            for _ in range(count):
                chunk_id, offset, length, raw_len = _ENTRY.unpack_from(raw, pos)
                pos += _ENTRY.size
                out[chunk_id] = BlobLocation(pack, offset, length, raw_len)
    except struct.error as e:
        raise IntegrityError(f"{what}: truncated index") from e
    return out


@dataclass
class Index:
    """Union of all index files: chunk id -> location."""

    blobs: dict[bytes, BlobLocation] = field(default_factory=dict)
    files: dict[str, set[str]] = field(default_factory=dict)  # index file -> packs it names
    damaged: dict[str, str] = field(default_factory=dict)  # index file -> problem

    def __contains__(self, chunk_id: bytes) -> bool:
        return chunk_id in self.blobs

    def get(self, chunk_id: bytes) -> BlobLocation | None:
        return self.blobs.get(chunk_id)

    def packs(self) -> set[str]:
        return {loc.pack for loc in self.blobs.values()}

    def add(self, located: dict[bytes, BlobLocation]) -> None:
        self.blobs.update(located)


def list_index_files(index_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in index_dir.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


def load_index(index_dir: Path, keys: KeyRing) -> Index:
    index = Index()
    for name in list_index_files(index_dir):
        what = f"index file {name}"
        try:
            raw = keys.open_index((index_dir / name).read_bytes(), _aad(name), what=what)
            blobs = decode_index(raw, what)
        except (OSError, IntegrityError) as e:
            index.damaged[name] = str(e)
            continue
        index.files[name] = {loc.pack for loc in blobs.values()}
        for chunk_id, loc in blobs.items():
            index.blobs.setdefault(chunk_id, loc)
    return index


def write_index_file(
    index_dir: Path, cipher: Cipher, blobs: Iterable[tuple[bytes, BlobLocation]]
) -> str:
    """Seal (with the index key: :func:`~chaoskit.dr.protect.repository.keyring.index_cipher`) and
    durably write one index file; return its id."""
    file_id = os.urandom(16).hex()
    index_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(index_dir / file_id, cipher.seal(encode_index(blobs), _aad(file_id)))
    return file_id
