"""Rewrite one tensor of a TensorFlow bundle so that the result is still a valid bundle.

The worker of :class:`~chaoskit.faults.weights.SilentWeightChange`, also a command
(``python -m chaoskit.faults.reweight --prefix P --out Q --tensor NAME --scale S``).
It scales the
values of one float tensor and writes ``--out.index`` / ``--out.data-00000-of-00001``:
the data shard with that tensor's bytes replaced, and the index with that tensor's
CRC32C (``BundleEntryProto.crc32c``, masked as TensorFlow stores it) and the CRC of the
table block holding it recomputed.  Offsets and sizes do not change, so every other
tensor stays byte-identical and TensorFlow's checks all pass on the result.

It is done in pure Python, in the fault's own process, not with TensorFlow's SaveV2 in
a subprocess: a fault's time is when ``inject`` began, and starting a process that
imports TensorFlow (~3 s, ~640 MB; even a bare interpreter is ~0.5 s on a loaded host)
before touching a file would add that much to every TTD measured.  The result is the
bundle SaveV2 would write (same bytes for the changed tensor, same CRC32C), which
tests/integration/test_weight_faults_tensorflow.py proves by loading it with TensorFlow.  The
tensor's stored CRC32C is checked first, so an already damaged tensor is refused, never
laundered into a valid one.

The command prints one JSON object on stdout; on failure one line on stderr and exit
status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from chaoskit.tfbundle import crc32c, read_varint

PROG = "chaoskit-reweight"
NUMPY_DTYPES = {1: "<f4", 2: "<f8", 19: "<f2"}
"""TensorFlow DataType enum -> little-endian numpy dtype (bfloat16 has none: refused)."""
_FOOTER = 48
_MAGIC = 0xDB4775248B80FB57


class ReweightError(ValueError):
    """The bundle cannot be rewritten as asked (message names the tensor or file)."""


def mask(crc: int) -> int:
    """LevelDB/TensorFlow CRC masking (``crc32c::Mask``)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return offset, size, pos


def _entries(data: bytes, offset: int, size: int) -> list[tuple[bytes, int, int]]:
    """(key, value start, value end) of each entry of the table block at *offset*."""
    if offset + size + 5 > len(data):
        raise ReweightError(f"index block at {offset} runs past the end")
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if mask(crc32c(data[offset : offset + size + 1])) != stored:
        raise ReweightError(f"index block at {offset} fails its CRC32C (damaged index)")
    if data[offset + size] != 0:
        raise ReweightError(f"index block at {offset} is compressed (not supported)")
    (restarts,) = struct.unpack_from("<I", data, offset + size - 4)
    limit = offset + size - 4 - 4 * restarts
    out, key, pos = [], b"", offset
    while pos < limit:
        shared, pos = read_varint(data, pos)
        unshared, pos = read_varint(data, pos)
        vlen, pos = read_varint(data, pos)
        key = key[:shared] + data[pos : pos + unshared]
        pos += unshared
        out.append((key, pos, pos + vlen))
        pos += vlen
    return out


def _find(index: bytes, name: str) -> tuple[int, int, int, int]:
    """(block offset, block size, value start, value end) of tensor *name* in the index."""
    if len(index) < _FOOTER or struct.unpack_from("<Q", index, len(index) - 8)[0] != _MAGIC:
        raise ReweightError("not a tensor bundle index (bad magic number)")
    footer = len(index) - _FOOTER
    _, _, pos = _block_handle(index, footer)  # metaindex
    top_offset, top_size, _ = _block_handle(index, pos)
    for _, start, _end in _entries(index, top_offset, top_size):
        offset, size, _ = _block_handle(index, start)
        for key, vstart, vend in _entries(index, offset, size):
            if key == name.encode():
                return offset, size, vstart, vend
    raise ReweightError(f"no tensor {name!r} in the index")


def _entry_fields(value: bytes) -> dict[int, tuple[int, int]]:
    """Field number -> (value, position) of the varint / fixed32 fields of an entry."""
    fields: dict[int, tuple[int, int]] = {}
    pos = 0
    while pos < len(value):
        tag, pos = read_varint(value, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            start = pos
            number_value, pos = read_varint(value, pos)
            fields[number] = (number_value, start)
        elif wire == 5:
            fields[number] = (struct.unpack_from("<I", value, pos)[0], pos)
            pos += 4
        elif wire == 2:
            length, pos = read_varint(value, pos)
            pos += length
        elif wire == 1:
            pos += 8
        else:
            raise ReweightError(f"unsupported protobuf wire type {wire} in an index entry")
    return fields


def _write_durably(path: Path, content: bytes | bytearray) -> None:
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def rewrite(prefix: Path, out: Path, tensor: str, scale: float) -> dict[str, Any]:
    """Write bundle *prefix* to *out* with *tensor*'s values times *scale*; what changed."""
    index_path = prefix.with_name(prefix.name + ".index")
    data_path = prefix.with_name(prefix.name + ".data-00000-of-00001")
    try:
        index, data = bytearray(index_path.read_bytes()), bytearray(data_path.read_bytes())
    except OSError as e:
        raise ReweightError(f"cannot read the bundle {prefix}: {e.strerror}") from e
    block, block_size, vstart, vend = _find(bytes(index), tensor)
    fields = _entry_fields(bytes(index[vstart:vend]))
    dtype = fields.get(1, (1, 0))[0]
    if dtype not in NUMPY_DTYPES:
        raise ReweightError(f"tensor {tensor!r} has dtype enum {dtype}, not float16/32/64")
    if fields.get(3, (0, 0))[0] != 0:
        raise ReweightError(f"tensor {tensor!r} is not in shard 0 (one shard supported)")
    offset, size = fields.get(4, (0, 0))[0], fields.get(5, (0, 0))[0]
    if 6 not in fields or offset + size > len(data):
        raise ReweightError(f"tensor {tensor!r} has no checksum or lies past the data's end")
    stored_crc, crc_pos = fields[6]
    old_bytes = bytes(data[offset : offset + size])
    if mask(crc32c(old_bytes)) != stored_crc:
        raise ReweightError(f"tensor {tensor!r} fails its stored CRC32C (already damaged)")
    old = np.frombuffer(old_bytes, dtype=NUMPY_DTYPES[dtype])
    with np.errstate(over="ignore", invalid="ignore"):
        new = (old.astype("<f8") * scale).astype(old.dtype)
    if not np.all(np.isfinite(new)):
        raise ReweightError(f"scaling {tensor!r} by {scale} gives non-finite values")
    if np.array_equal(old, new):
        raise ReweightError(f"scaling {tensor!r} by {scale} leaves its values unchanged")
    new_bytes = new.tobytes()
    data[offset : offset + size] = new_bytes
    new_crc = mask(crc32c(new_bytes))
    struct.pack_into("<I", index, vstart + crc_pos, new_crc)
    block_crc = mask(crc32c(bytes(index[block : block + block_size + 1])))
    struct.pack_into("<I", index, block + block_size + 1, block_crc)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_durably(out.with_name(out.name + ".data-00000-of-00001"), data)
    _write_durably(out.with_name(out.name + ".index"), index)
    return {
        "tensor": tensor,
        "dtype": NUMPY_DTYPES[dtype],
        "values_sha256_before": hashlib.sha256(old_bytes).hexdigest(),
        "values_sha256_after": hashlib.sha256(new_bytes).hexdigest(),
        "crc32c_before": stored_crc,
        "crc32c_after": new_crc,
        "max_abs_change": float(np.max(np.abs(new.astype("<f8") - old.astype("<f8")))),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--prefix", required=True, type=Path, help="bundle to read (no suffix)")
    p.add_argument("--out", required=True, type=Path, help="prefix of the bundle to write")
    p.add_argument("--tensor", required=True, help="name of the float tensor to change")
    p.add_argument("--scale", required=True, type=float, help="factor for its values")
    args = p.parse_args(argv)
    if not math.isfinite(args.scale) or args.scale == 1.0:
        p.error(f"--scale must be finite and not 1, got {args.scale}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = rewrite(args.prefix, args.out, args.tensor, args.scale)
    except (ReweightError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
