"""Authenticated encryption and keyed chunk ids for the backup repository.

Every stored object (chunk, pack header, index, snapshot, wrapped master key) is
``nonce || AES-256-GCM(ciphertext || tag)``.  Nonces are 96 random bits from the OS
CSPRNG, fresh for every encryption; with far fewer than 2**32 encryptions per key the
collision probability is negligible (NIST SP 800-38D, 8.3).  The associated data binds
each ciphertext to its name (chunk id, file id, kind), so a blob or file moved to
another name fails authentication instead of being used.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chaoskit.errors import IntegrityError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
ID_SIZE = 32


@dataclass(frozen=True)
class MasterKey:
    """The repository secret: one key encrypts, the other keys chunk ids and MACs."""

    enc_key: bytes
    mac_key: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32), os.urandom(32))

    def to_bytes(self) -> bytes:
        return self.enc_key + self.mac_key

    @classmethod
    def from_bytes(cls, raw: bytes) -> MasterKey:
        if len(raw) != 64:
            raise IntegrityError(f"master key has {len(raw)} bytes, expected 64")
        return cls(raw[:32], raw[32:])


class Cipher:
    """AES-256-GCM with random nonces plus the keyed hash used for chunk ids."""

    def __init__(self, key: MasterKey) -> None:
        self.key = key
        self._aead = AESGCM(key.enc_key)

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def seal_into(
        self, data: bytes | memoryview, aad: bytes, out: Buffer
    ) -> tuple[bytes, memoryview]:
        """(nonce, ciphertext) with the ciphertext in *out*'s memory: no allocation per chunk."""
        nonce = os.urandom(NONCE_SIZE)
        view = out.view(len(data) + TAG_SIZE)
        self._aead.encrypt_into(nonce, data, aad, view)
        return nonce, view

    def open_into(self, sealed: memoryview, aad: bytes, out: Buffer, *, what: str) -> memoryview:
        """Authenticated plaintext in *out*'s memory (garbage there is never returned)."""
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what}: truncated ({len(sealed)} bytes)")
        view = out.view(len(sealed) - OVERHEAD)
        try:
            self._aead.decrypt_into(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad, view)
        except InvalidTag as e:
            raise IntegrityError(f"{what}: authentication failed (damaged or tampered)") from e
        return view

    def open(self, sealed: bytes | memoryview, aad: bytes, *, what: str) -> bytes:
        """Decrypt and authenticate; IntegrityError names *what* when it does not verify."""
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what}: truncated ({len(sealed)} bytes)")
        view = memoryview(sealed)
        try:
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
        except InvalidTag as e:
            raise IntegrityError(f"{what}: authentication failed (damaged or tampered)") from e

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        """HMAC-SHA-256 of the plaintext: equal chunks share an id, ids reveal nothing."""
        return hmac.new(self.key.mac_key, data, hashlib.sha256).digest()

    def mac(self, data: bytes) -> str:
        return keyed_mac(self.key.mac_key, data)

    def verify_mac(self, data: bytes, mac: str, *, what: str) -> None:
        if not hmac.compare_digest(self.mac(data), mac):
            raise IntegrityError(f"{what}: MAC mismatch (damaged or tampered)")


def keyed_mac(mac_key: bytes, data: bytes) -> str:
    """The MAC over config and key files: every key, writers too, can make and check it."""
    return hmac.new(mac_key, b"chaoskit-mac\0" + data, hashlib.sha256).hexdigest()


class Buffer:
    """A reusable byte buffer handing out exact-size views; grows when asked for more."""

    def __init__(self, size: int = 0) -> None:
        self._data = bytearray(size)

    def view(self, size: int) -> memoryview:
        if size > len(self._data):
            self._data = bytearray(max(size, 2 * len(self._data)))
        return memoryview(self._data)[:size]


def wrap(kek: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt *plaintext* under a key-encryption key (used for key files)."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(kek).encrypt(nonce, plaintext, aad)


def unwrap(kek: bytes, sealed: bytes, aad: bytes) -> bytes | None:
    """The plaintext, or None when *kek* is wrong or the data was changed."""
    if len(sealed) < OVERHEAD:
        return None
    try:
        return AESGCM(kek).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
    except InvalidTag:
        return None
