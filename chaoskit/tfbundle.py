"""Read a TensorFlow tensor bundle's ``.index`` without importing TensorFlow.

The ``.index`` of a checkpoint (or of a SavedModel's ``variables/``) is a LevelDB-style
sorted table: data blocks of prefix-compressed key/value entries, an index block that
points at them, a 48-byte footer.  Key ``""`` holds a ``BundleHeaderProto``; every other
key is a tensor name whose value is a ``BundleEntryProto`` (dtype, shape, shard_id,
offset, size, crc32c).  Knowing each tensor's byte range lets the chunker cut the
``.data-*`` shards at tensor boundaries, so an unchanged tensor dedups exactly.
Importing TensorFlow to learn this would cost seconds and ~600 MB on every backup.
The backup repository's chunker and the weight faults (which rewrite tensors and their
checksums in place) both read the format through this one module.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from chaoskit.errors import IntegrityError

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_DATA_NAME = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})$")


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE: list[int] = []


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli); pure Python, meant for the small index blocks only."""
    if not _CRC_TABLE:
        _CRC_TABLE.extend(_crc_table())
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IntegrityError("tensor bundle index: varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IntegrityError("tensor bundle index: varint too long")


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live in the bundle's data shards."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


@dataclass(frozen=True)
class BundleIndex:
    num_shards: int
    entries: tuple[TensorEntry, ...]

    def shard_extent(self, shard_id: int) -> int:
        """Bytes a complete data shard must have at least."""
        ends = [e.offset + e.size for e in self.entries if e.shard_id == shard_id]
        return max(ends, default=0)


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        if tag >> 3 == 2 and tag & 7 == 2:  # repeated Dim dim
            length, pos = read_varint(buf, pos)
            dim, end = buf[pos : pos + length], pos + length
            size, dpos = 0, 0
            while dpos < len(dim):
                dtag, dpos = read_varint(dim, dpos)
                if dtag & 7 == 0:
                    value, dpos = read_varint(dim, dpos)
                    if dtag >> 3 == 1:
                        size = value
                else:
                    dpos = _skip(dim, dpos, dtag & 7)
            dims.append(size)
            pos = end
        else:
            pos = _skip(buf, pos, tag & 7)
    return tuple(dims)


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return read_varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        length, pos = read_varint(buf, pos)
        return pos + length
    if wire == 5:
        return pos + 4
    raise IntegrityError(f"tensor bundle index: unsupported protobuf wire type {wire}")


def _parse_fields(buf: bytes) -> dict[int, int | bytes]:
    """Last value of each scalar / bytes field of a protobuf message."""
    fields: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[number], pos = read_varint(buf, pos)
        elif wire == 5:
            fields[number] = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            fields[number] = buf[pos : pos + length]
            pos += length
        else:
            pos = _skip(buf, pos, wire)
    if pos != len(buf):
        raise IntegrityError("tensor bundle index: protobuf message overruns its value")
    return fields


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    if offset + size + 5 > len(data):
        raise IntegrityError(f"tensor bundle index: block at {offset} runs past the end")
    block = data[offset : offset + size]
    kind = data[offset + size]
    (masked,) = struct.unpack_from("<I", data, offset + size + 1)
    if crc32c(data[offset : offset + size + 1]) != _unmask(masked):
        raise IntegrityError(f"tensor bundle index: block at {offset} fails its crc32c")
    if kind != 0:
        raise IntegrityError(f"tensor bundle index: block compression {kind} not supported")
    return block


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise IntegrityError("tensor bundle index: block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise IntegrityError("tensor bundle index: bad restart count")
    out: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        vlen, pos = read_varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise IntegrityError("tensor bundle index: entry overruns its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + vlen]))
        pos += vlen
    return out


def read_bundle_index(path: str | Path) -> BundleIndex:
    """Parse a bundle ``.index``; IntegrityError when it is not a complete, valid table."""
    data = Path(path).read_bytes()
    if len(data) < _FOOTER_SIZE:
        raise IntegrityError(f"{path}: too short for a tensor bundle index")
    footer = data[-_FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, 40)
    if magic != _MAGIC:
        raise IntegrityError(f"{path}: bad magic number, not a tensor bundle index")
    pos = read_varint(footer, read_varint(footer, 0)[1])[1]  # skip the metaindex handle
    index_offset, pos = read_varint(footer, pos)
    index_size, _ = read_varint(footer, pos)
    num_shards = 1
    entries: list[TensorEntry] = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
        block_offset, hpos = read_varint(handle, 0)
        block_size, _ = read_varint(handle, hpos)
        for key, value in _block_entries(_read_block(data, block_offset, block_size)):
            fields = _parse_fields(value)
            if key == b"":
                num_shards = int(fields.get(1, 1))  # type: ignore[arg-type]
                continue
            shape = fields.get(2, b"")
            entries.append(
                TensorEntry(
                    name=key.decode("utf-8", "replace"),
                    dtype=int(fields.get(1, 0)),  # type: ignore[arg-type]
                    shape=_parse_shape(shape) if isinstance(shape, bytes) else (),
                    shard_id=int(fields.get(3, 0)),  # type: ignore[arg-type]
                    offset=int(fields.get(4, 0)),  # type: ignore[arg-type]
                    size=int(fields.get(5, 0)),  # type: ignore[arg-type]
                    crc32c=int(fields.get(6, 0)),  # type: ignore[arg-type]
                )
            )
    return BundleIndex(num_shards=num_shards, entries=tuple(entries))


def data_shard_of(path: Path) -> tuple[Path, int] | None:
    """(.index path, shard id) when *path* is a bundle data shard with its index beside it."""
    match = _DATA_NAME.match(path.name)
    if not match:
        return None
    index = path.with_name(match["prefix"] + ".index")
    return (index, int(match["shard"])) if index.is_file() else None


def tensor_spans(index: BundleIndex, shard_id: int, file_size: int) -> list[tuple[int, int]]:
    """(offset, size) of each tensor in one shard, sorted, clipped to the file, no overlaps."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for entry in sorted(
        (e for e in index.entries if e.shard_id == shard_id and e.size > 0), key=lambda e: e.offset
    ):
        if entry.offset < pos or entry.offset + entry.size > file_size:
            continue
        spans.append((entry.offset, entry.size))
        pos = entry.offset + entry.size
    return spans


def bundle_complete(prefix: str | Path) -> bool:
    """True when ``prefix.index`` parses and every data shard holds all its tensors."""
    prefix = Path(prefix)
    try:
        index = read_bundle_index(prefix.with_name(prefix.name + ".index"))
    except (OSError, IntegrityError):
        return False
    for shard in range(index.num_shards):
        shard_path = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{index.num_shards:05d}")
        try:
            if shard_path.stat().st_size < index.shard_extent(shard):
                return False
        except OSError:
            return False
    return True
