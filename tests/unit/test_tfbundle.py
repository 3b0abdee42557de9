"""The pure-Python tensor bundle reader and the tensor-aware chunker.

A tiny LevelDB table writer here builds bundle indexes byte by byte, following the
format TensorFlow writes; tests/integration/test_backup_tensorflow.py checks the same
reader against real TensorFlow checkpoints.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

from chaoskit.dr import init_repository
from chaoskit.dr.protect.repository.chunker import MAX_TENSOR_PIECE, Chunker
from chaoskit.errors import IntegrityError
from chaoskit.tfbundle import (
    bundle_complete,
    crc32c,
    read_bundle_index,
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def entry_proto(shape: tuple[int, ...], offset: int, size: int, shard: int = 0) -> bytes:
    dims = b"".join(
        _field(2, 2, _varint(len(d)) + d) for d in (_field(1, 0, _varint(n)) for n in shape)
    )
    return (
        _field(1, 0, _varint(1))
        + _field(2, 2, _varint(len(dims)) + dims)
        + (_field(3, 0, _varint(shard)) if shard else b"")
        + _field(4, 0, _varint(offset))
        + _field(5, 0, _varint(size))
        + _field(6, 5, struct.pack("<I", 12345))
    )


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    offsets, pos = [], 0
    for k, v in entries:
        offsets.append(pos)
        pos += len(_varint(0) + _varint(len(k)) + _varint(len(v))) + len(k) + len(v)
    return body + b"".join(struct.pack("<I", o) for o in offsets) + struct.pack("<I", len(offsets))


def _with_trailer(block: bytes) -> bytes:
    crc = crc32c(block + b"\0")
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return block + b"\0" + struct.pack("<I", masked)


def write_index(
    path: Path, tensors: dict[str, tuple[tuple[int, ...], int, int]], num_shards: int = 1
) -> None:
    """A bundle .index: header entry "" plus one BundleEntryProto per tensor."""
    entries = [(b"", _field(1, 0, _varint(num_shards)))]
    entries += [
        (name.encode(), entry_proto(shape, off, size))
        for name, (shape, off, size) in sorted(tensors.items())
    ]
    data = _block(entries)
    out = _with_trailer(data)
    meta_off, meta = len(out), _block([])
    out += _with_trailer(meta)
    handle = _varint(0) + _varint(len(data))
    index_off, index = len(out), _block([(entries[-1][0] + b"\xff", handle)])
    out += _with_trailer(index)
    footer = _varint(meta_off) + _varint(len(meta)) + _varint(index_off) + _varint(len(index))
    footer = footer.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    path.write_bytes(out + footer)


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_reader_returns_every_tensor(tmp_path: Path) -> None:
    write_index(
        tmp_path / "m.index",
        {"dense/kernel": ((64, 32), 0, 8192), "dense/bias": ((32,), 8192, 128)},
    )
    index = read_bundle_index(tmp_path / "m.index")
    assert index.num_shards == 1
    by_name = {e.name: e for e in index.entries}
    assert by_name["dense/kernel"].shape == (64, 32) and by_name["dense/kernel"].size == 8192
    assert by_name["dense/bias"].offset == 8192 and by_name["dense/bias"].crc32c == 12345


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_damaged_index_is_rejected(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.index"
    write_index(path, {"w": ((4,), 0, 16)})
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[5] ^= 0x10
    elif damage == "truncate":
        del data[-60:]
    else:
        data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        read_bundle_index(path)


def test_completeness_needs_every_shard_byte(tmp_path: Path) -> None:
    write_index(tmp_path / "ckpt-1.index", {"w": ((1000,), 0, 4000)})
    data = tmp_path / "ckpt-1.data-00000-of-00001"
    data.write_bytes(b"\0" * 3999)
    assert not bundle_complete(tmp_path / "ckpt-1")
    data.write_bytes(b"\0" * 4000)
    assert bundle_complete(tmp_path / "ckpt-1")
    assert not bundle_complete(tmp_path / "ckpt-2")


def test_plan_cuts_at_tensor_boundaries_and_splits_large_tensors(tmp_path: Path) -> None:
    big = MAX_TENSOR_PIECE + 1000
    write_index(tmp_path / "m.index", {"a": ((10,), 0, 40), "b": ((big // 4,), 48, big)})
    size = 48 + big + 7
    plan = Chunker().plan(tmp_path / "m.data-00000-of-00001", size)
    assert plan == [
        (0, 40),
        (40, 8),
        (48, MAX_TENSOR_PIECE),
        (48 + MAX_TENSOR_PIECE, 1000),
        (48 + big, 7),
    ]
    assert Chunker().plan(tmp_path / "other.bin", 3 << 20) == [
        (0, 1 << 20),
        (1 << 20, 1 << 20),
        (2 << 20, 1 << 20),
    ]


def test_only_the_changed_tensor_is_stored_again(tmp_path: Path) -> None:
    """Head changes, body stays: the second backup stores the head's bytes and nothing else."""
    body, head, step = os.urandom(300_000), os.urandom(10_000), os.urandom(8)
    layout = {
        "head": ((2500,), 0, 10_000),
        "step": ((), 10_000, 8),
        "body": ((75_000,), 10_008, 300_000),
    }
    repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    for n, (h, s) in enumerate([(head, step), (os.urandom(10_000), step)], start=1):
        ckpt = tmp_path / f"c{n}"
        ckpt.mkdir()
        write_index(ckpt / "ckpt.index", layout)
        (ckpt / "ckpt.data-00000-of-00001").write_bytes(h + s + body)
        snap = repo.backup(ckpt)
    assert snap.summary["bundle_files"] == 1
    assert snap.summary["new_bytes"] == 10_000


def test_backup_path_does_not_import_tensorflow(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys; from chaoskit.dr import init_repository;"
        f"r = init_repository({str(tmp_path / 'r')!r}, 'pw', scrypt_n=2**10);"
        f"r.backup({str(tmp_path / 'src')!r}); r.restore('latest', {str(tmp_path / 'out')!r});"
        "import chaoskit.dr.protect.backup_cli;"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    (tmp_path / "src").mkdir()
    write_index(tmp_path / "src" / "x.index", {"w": ((4,), 0, 16)})
    (tmp_path / "src" / "x.data-00000-of-00001").write_bytes(b"\1" * 16)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
