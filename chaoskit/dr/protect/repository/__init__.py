"""The DR engine's backup repository: encrypted, deduplicated, model-aware recovery points.

On-disk layout of a repository (the "DR site"), format version 1::

    config            JSON: format version, repository id, MAC (chunk-id key) over the rest
    keys/<id>         JSON: scrypt parameters and salt, the role, what the key grants
                      (master key; a writer: chunk-id key and public key) sealed under
                      the password-derived key (AES-256-GCM), MAC over the whole file;
                      or kind "recipient": the X25519 key pair writers wrap data keys to
    data/<xx>/<id>    pack: sealed chunks, then a sealed header (chunk id, lengths), [a
                      writer's data-key envelope,] then the header length (u32 LE)
    index/<id>        sealed with the index key: chunk id -> pack, offset, length
    snapshots/<id>    sealed, zlib'd JSON manifest: files, SHA-256s, chunk ids, metadata
    locks/<id>        JSON: host, pid, process start time, refresh time

"Sealed" is ``nonce(12) || AES-256-GCM ciphertext || tag(16)`` with the object's name as
associated data, under the master key or (objects a writer key made) under a per-backup
data key wrapped to the repository's public key with HPKE (see
:mod:`chaoskit.dr.protect.repository.keyring`).  Chunk ids are HMAC-SHA-256 of the plaintext
under a repository key.  Key roles (admin, operator, writer, reader) are in
:mod:`chaoskit.dr.protect.repository.roles`.  Every file is written to a temporary name,
fsynced and renamed, in the order packs -> index -> snapshot, so a crash never leaves a
reference to data that is not durable.
"""

from __future__ import annotations

from chaoskit.dr.protect.repository.repo import (
    FORMAT_VERSION,
    Repository,
    init_repository,
    open_repository,
)

__all__ = ["FORMAT_VERSION", "Repository", "init_repository", "open_repository"]
