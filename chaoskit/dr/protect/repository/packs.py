"""Pack files: many encrypted chunks in one file, with an encrypted header at the end.

Layout: ``blob blob ... blob header header_length(u32 LE)``.  Each blob is a sealed chunk
(its AAD is the chunk id); the header lists ``(chunk id, sealed length, plain length)``
for each blob in order and is sealed with the pack id as AAD, so the index can always
be rebuilt from the packs alone.  A writer's pack (sealed with a data key, see
:mod:`chaoskit.dr.protect.repository.keyring`) carries the data key's envelope after the header:
``... header envelope envelope_length(u16 LE) header_length(u32 LE, bit 31 set)``.
A pack is written under a temporary name, fsynced and renamed; only then may an index
point at it.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chaoskit.atomic import fsync_dir
from chaoskit.dr.protect.repository.crypto import Buffer, Cipher
from chaoskit.dr.protect.repository.keyring import KeyRing
from chaoskit.errors import IntegrityError

PACK_TARGET = 16 << 20
_ENTRY = struct.Struct("<32sII")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
ENVELOPE_FLAG = 1 << 31


@dataclass(frozen=True)
class BlobLocation:
    """Where one sealed chunk lives."""

    pack: str
    offset: int
    length: int
    raw_length: int


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Callable[[int, int, int, int], int] | None = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing this range to disk now, without waiting
    (Linux sync_file_range), so the fsync that follows has little left to do."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            func = ctypes.CDLL(None, use_errno=True).sync_file_range
            func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _sync_file_range = func
        except (AttributeError, OSError):
            _sync_file_range = lambda *_: 0  # noqa: E731 - not Linux: fsync does it all
    _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def pack_path(data_dir: Path, pack_id: str) -> Path:
    return data_dir / pack_id[:2] / pack_id


def list_packs(data_dir: Path) -> dict[str, Path]:
    """Pack id -> path for every finished pack (temporary files are skipped)."""
    packs: dict[str, Path] = {}
    if not data_dir.is_dir():
        return packs
    for sub in data_dir.iterdir():
        if sub.is_dir():
            for p in sub.iterdir():
                if not p.name.startswith("."):
                    packs[p.name] = p
    return packs


def header_aad(pack_id: str) -> bytes:
    return b"chaoskit-pack\0" + pack_id.encode()


class _OpenPack:
    def __init__(self, data_dir: Path) -> None:
        self.id = os.urandom(16).hex()
        self.final = pack_path(data_dir, self.id)
        if not self.final.parent.is_dir():
            self.final.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(data_dir)  # the new subdirectory's own entry must be durable too
        self.tmp = self.final.with_name(f".{self.id}.tmp")
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        self.size = 0
        self.entries: list[tuple[bytes, int, int, int]] = []  # id, offset, length, raw


class PackWriter:
    """Appends sealed chunks to packs; finishing (fsync + rename) runs in a worker thread."""

    def __init__(
        self,
        data_dir: Path,
        cipher: Cipher,
        *,
        target: int = PACK_TARGET,
        envelope: bytes | None = None,
    ) -> None:
        """*envelope*: the wrapped data key of *cipher*, stored in every pack's trailer."""
        self.data_dir = data_dir
        self.cipher = cipher
        self.envelope = envelope
        self.target = target
        self._current: _OpenPack | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chaoskit-pack")
        self._pending: list[tuple[_OpenPack, Future[None]]] = []
        self._out = Buffer(1 << 20)
        self.bytes_written = 0

    def add(self, chunk_id: bytes, plaintext: bytes | memoryview) -> None:
        """Seal one chunk (AAD = its id) and append it to the current pack."""
        pack = self._current
        if pack is None:
            pack = self._current = _OpenPack(self.data_dir)
        nonce, ciphertext = self.cipher.seal_into(plaintext, chunk_id, self._out)
        length = len(nonce) + len(ciphertext)
        written = os.writev(pack.fd, [nonce, ciphertext])
        if written < length:  # rare short write: finish it plainly
            rest = memoryview(nonce + bytes(ciphertext))[written:]
            while rest:
                rest = rest[os.write(pack.fd, rest) :]
        pack.entries.append((chunk_id, pack.size, length, len(plaintext)))
        if length >= 1 << 20:
            start_writeback(pack.fd, pack.size, length)
        pack.size += length
        self.bytes_written += length
        if pack.size >= self.target:
            self._seal_current()

    def _seal_current(self) -> None:
        pack, self._current = self._current, None
        if pack is not None:
            self._pending.append((pack, self._pool.submit(self._finish, pack)))

    def _finish(self, pack: _OpenPack) -> None:
        header = b"".join(_ENTRY.pack(i, n, raw) for i, _, n, raw in pack.entries)
        sealed = self.cipher.seal(header, header_aad(pack.id))
        if self.envelope is None:
            tail = sealed + _U32.pack(len(sealed))
        else:
            envelope = self.envelope
            tail = b"".join(
                (sealed, envelope, _U16.pack(len(envelope)), _U32.pack(len(sealed) | ENVELOPE_FLAG))
            )
        view = memoryview(tail)
        while view:
            view = view[os.write(pack.fd, view) :]
        os.fsync(pack.fd)
        os.close(pack.fd)
        pack.fd = -1
        os.rename(pack.tmp, pack.final)
        fsync_dir(pack.final.parent)

    def flush(self) -> dict[bytes, BlobLocation]:
        """Finish every pack and return the locations of all chunks now durable."""
        self._seal_current()
        located: dict[bytes, BlobLocation] = {}
        for pack, future in self._pending:
            future.result()
            for chunk_id, offset, length, raw in pack.entries:
                located[chunk_id] = BlobLocation(pack.id, offset, length, raw)
        return located

    def packs(self) -> list[str]:
        return [p.id for p, _ in self._pending]

    def abort(self) -> None:
        """Remove everything this writer created: none of it is indexed yet."""
        packs = [p for p, _ in self._pending]
        if self._current is not None:
            packs.append(self._current)
        self._current = None
        for _pack, future in self._pending:
            with contextlib.suppress(BaseException):
                future.result()
        for pack in packs:
            if pack.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(pack.fd)
            for path in (pack.tmp, pack.final):
                with contextlib.suppress(OSError):
                    path.unlink()
        self._pending.clear()
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def read_trailer(fd: int, what: str) -> tuple[int, int, bytes | None]:
    """(header offset, header length, envelope or None) from a pack's end."""
    size = os.fstat(fd).st_size
    if size < _U32.size:
        raise IntegrityError(f"{what}: truncated ({size} bytes)")
    (word,) = _U32.unpack(os.pread(fd, _U32.size, size - _U32.size))
    end, envelope = size - _U32.size, None
    if word & ENVELOPE_FLAG:
        if end < _U16.size:
            raise IntegrityError(f"{what}: truncated ({size} bytes)")
        (elen,) = _U16.unpack(os.pread(fd, _U16.size, end - _U16.size))
        end -= _U16.size + elen
        if end < 0:
            raise IntegrityError(f"{what}: envelope length {elen} exceeds the file")
        envelope = os.pread(fd, elen, end)
    hlen = word & ~ENVELOPE_FLAG
    if hlen > end:
        raise IntegrityError(f"{what}: header length {hlen} exceeds the file")
    return end - hlen, hlen, envelope


def pack_cipher(fd: int, pack_id: str, keys: KeyRing) -> Cipher:
    """The cipher that opens the blobs of an open pack file.  When the trailer is damaged
    the master key is tried: each blob still authenticates, or fails, on its own."""
    what = f"pack {pack_id}"
    try:
        return keys.data_cipher(read_trailer(fd, what)[2], what=what)
    except IntegrityError:
        if keys.master_cipher is None:
            raise
        return keys.master_cipher


def read_header(path: Path, pack_id: str, keys: KeyRing) -> list[tuple[bytes, BlobLocation]]:
    """The blobs a pack says it holds, authenticated; IntegrityError names the pack."""
    what = f"pack {pack_id}"
    with open(path, "rb", buffering=0) as f:
        start, hlen, envelope = read_trailer(f.fileno(), what)
        cipher = keys.data_cipher(envelope, what=what)
        sealed = os.pread(f.fileno(), hlen, start)
    header = cipher.open(sealed, header_aad(pack_id), what=f"{what} header")
    if len(header) % _ENTRY.size:
        raise IntegrityError(f"{what}: header has a partial entry")
    out: list[tuple[bytes, BlobLocation]] = []
    offset = 0
    for chunk_id, length, raw in _ENTRY.iter_unpack(header):
        out.append((chunk_id, BlobLocation(pack_id, offset, length, raw)))
        offset += length
    if offset != start:
        raise IntegrityError(f"{what}: blobs and header do not add up to the file size")
    return out
