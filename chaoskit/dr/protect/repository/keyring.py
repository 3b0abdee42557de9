"""What an opened key can seal and open: write-only backups by envelope encryption.

A key that holds the master key (roles admin, operator, reader) seals and opens
everything with it, as format 1 always did.  A *writer* key holds only the chunk-id key
and the repository's public key: each backup generates a fresh AES-256 data key, seals
its chunks, pack headers and snapshot with it, and stores the data key wrapped to the
public key (an *envelope*, HPKE base mode, RFC 9180: X25519, HKDF-SHA-256, AES-256-GCM,
from ``cryptography``).  The writer forgets the data key when the backup ends; only a
key that can open the recipient's private half (sealed under the master key in a
``keys/`` file of kind ``recipient``) can read that backup again.

Index files are sealed under a key derived from the chunk-id key, so a writer can read
them to deduplicate: a writer learns which chunk ids exist (so, for a plaintext it
already knows, whether the repository holds it) and their sizes, nothing about contents.
An envelope-sealed file is ``MAGIC || u16 envelope length || envelope || sealed``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chaoskit.dr.protect.repository.crypto import Cipher, MasterKey
from chaoskit.errors import IntegrityError

MAGIC = b"CKENV1\0\0"
_LEN = struct.Struct("<H")
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
SUITE_NAME = "hpke-base-x25519-hkdf-sha256-aes-256-gcm"


def derive_key(mac_key: bytes, label: str) -> bytes:
    """A 256-bit key for one purpose, derived from the chunk-id key (HKDF-SHA-256)."""
    info = b"chaoskit-" + label.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(mac_key)


def index_cipher(mac_key: bytes) -> Cipher:
    """The cipher of index files: every key, writers included, can open it."""
    return Cipher(MasterKey(derive_key(mac_key, "index"), mac_key))


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _info(repo_id: str) -> bytes:
    return b"chaoskit-data-key\0" + repo_id.encode()


def wrap_data_key(data_key: bytes, public: bytes, repo_id: str) -> bytes:
    """*data_key* encrypted to *public* (HPKE base mode, bound to the repository id)."""
    return SUITE.encrypt(data_key, X25519PublicKey.from_public_bytes(public), info=_info(repo_id))


def unwrap_data_key(envelope: bytes, private: X25519PrivateKey, repo_id: str) -> bytes | None:
    try:
        return SUITE.decrypt(envelope, private, info=_info(repo_id))
    except Exception:  # InvalidTag, or a malformed encapsulated key (ValueError)
        return None


def frame(envelope: bytes, sealed: bytes) -> bytes:
    return MAGIC + _LEN.pack(len(envelope)) + envelope + sealed


def unframe(blob: bytes) -> tuple[bytes, bytes] | None:
    """(envelope, sealed) of an envelope-sealed file, None for a master-key-sealed one."""
    head = len(MAGIC) + _LEN.size
    if len(blob) < head or not blob.startswith(MAGIC):
        return None
    (length,) = _LEN.unpack_from(blob, len(MAGIC))
    if head + length > len(blob):
        return None
    return blob[head : head + length], blob[head + length :]


@dataclass
class Sealer:
    """Seals the objects of one backup: with the master key, or with a fresh data key
    whose envelope goes with every object (packs carry it in their trailer)."""

    cipher: Cipher
    envelope: bytes | None = None

    def seal_file(self, plaintext: bytes, aad: bytes) -> bytes:
        sealed = self.cipher.seal(plaintext, aad)
        return sealed if self.envelope is None else frame(self.envelope, sealed)


@dataclass
class KeyRing:
    """The keys one opened key file gives: *master* is None for a writer."""

    repo_id: str
    mac_key: bytes
    master: MasterKey | None
    public: bytes | None = None  # where a writer wraps its data keys
    load_recipients: Callable[[], dict[bytes, X25519PrivateKey]] | None = None
    _recipients: dict[bytes, X25519PrivateKey] | None = field(default=None, repr=False)
    _data: dict[bytes, Cipher] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.index = index_cipher(self.mac_key)
        self.master_cipher = Cipher(self.master) if self.master is not None else None

    @property
    def can_read(self) -> bool:
        return self.master_cipher is not None

    def session(self) -> Sealer:
        """How one backup seals: the master key, else a new data key for the public key."""
        if self.master_cipher is not None:
            return Sealer(self.master_cipher)
        if self.public is None:
            raise IntegrityError("writer key names no repository public key")
        data_key = os.urandom(32)
        envelope = wrap_data_key(data_key, self.public, self.repo_id)
        return Sealer(Cipher(MasterKey(data_key, self.mac_key)), envelope)

    def data_cipher(self, envelope: bytes | None, *, what: str) -> Cipher:
        """The cipher that opens an object sealed with *envelope* (None: the master key)."""
        if envelope is None:
            if self.master_cipher is None:
                raise IntegrityError(f"{what}: sealed with the master key, which this key lacks")
            return self.master_cipher
        cipher = self._data.get(envelope)
        if cipher is not None:
            return cipher
        loaded = self._recipients is None and self.load_recipients is not None
        if loaded:
            self._recipients = self.load_recipients()  # type: ignore[misc]
        cipher = self._unwrap(envelope)
        if cipher is None and not loaded and self.load_recipients is not None:
            self._recipients = self.load_recipients()  # one made since the last look?
            cipher = self._unwrap(envelope)
        if cipher is not None:
            self._data[envelope] = cipher
            return cipher
        if not self._recipients:
            raise IntegrityError(f"{what}: sealed to the repository's public key; this key "
                                 "holds no private key to open it")  # fmt: skip
        raise IntegrityError(f"{what}: its data key opens with no recipient key (damaged?)")

    def _unwrap(self, envelope: bytes) -> Cipher | None:
        for private in (self._recipients or {}).values():
            data_key = unwrap_data_key(envelope, private, self.repo_id)
            if data_key is not None and len(data_key) == 32:
                return Cipher(MasterKey(data_key, self.mac_key))
        return None

    def open_file(self, blob: bytes, aad: bytes, *, what: str) -> bytes:
        """Open a sealed file, whichever way it was sealed."""
        framed = unframe(blob)
        if framed is None:
            return self.data_cipher(None, what=what).open(blob, aad, what=what)
        envelope, sealed = framed
        try:
            return self.data_cipher(envelope, what=what).open(sealed, aad, what=what)
        except IntegrityError:
            if self.master_cipher is None:
                raise
            try:  # a master-sealed file whose random nonce began with MAGIC (p = 2**-64)
                return self.master_cipher.open(blob, aad, what=what)
            except IntegrityError:
                pass
            raise

    def open_index(self, blob: bytes, aad: bytes, *, what: str) -> bytes:
        """Index files are sealed with the index key; format-1 ones with the master key."""
        try:
            return self.index.open(blob, aad, what=what)
        except IntegrityError:
            if self.master_cipher is None:
                raise
            return self.master_cipher.open(blob, aad, what=what)
