"""Key files: what a password opens, wrapped under passphrase-derived keys (scrypt).

Several key files may wrap the same keys, one per password, so a password can be added,
changed or revoked without re-encrypting any data.  An ``admin`` key file wraps the
64-byte master key (format 1, as every key file before roles); an ``operator`` or
``reader`` one wraps a JSON payload with the master key and its role; a ``writer`` one
wraps only the chunk-id key and the repository's public key (see
:mod:`chaoskit.dr.protect.repository.keyring`).  The role that counts is the one inside the
wrapped payload (authenticated by the password); the clear ``role`` field is for
``key list``.  Each key file also carries a MAC made with the chunk-id key over all its
fields, so ``check`` finds a damaged key file even when nobody knows its password.

A ``keys/`` file of kind ``recipient`` holds the X25519 key pair writers wrap their data
keys to: the public half in clear, the private half sealed under the master key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chaoskit.atomic import atomic_write_bytes, fsync_dir
from chaoskit.dr.protect.repository.crypto import MasterKey, keyed_mac, unwrap, wrap
from chaoskit.dr.protect.repository.keyring import public_bytes
from chaoskit.dr.protect.repository.roles import check_role
from chaoskit.errors import ConfigError, IntegrityError, RepositoryError

DEFAULT_SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


@dataclass(frozen=True)
class KeyInfo:
    """What ``key list`` shows about one key file."""

    id: str
    created: float
    hostname: str
    username: str
    current: bool
    role: str = "admin"


@dataclass(frozen=True)
class Grant:
    """What a key file gives whoever knows its password."""

    role: str
    mac_key: bytes
    master: MasterKey | None  # None for a writer
    public: bytes | None = None  # the recipient a writer wraps its data keys to

    @classmethod
    def of(cls, master: MasterKey, role: str = "admin") -> Grant:
        return cls(check_role(role), master.mac_key, master)

    @classmethod
    def writer(cls, mac_key: bytes, public: bytes) -> Grant:
        return cls("writer", mac_key, None, public)

    def payload(self) -> bytes:
        if self.role == "admin" and self.master is not None:
            return self.master.to_bytes()  # format 1: every key file before roles
        doc = {"role": self.role, "mac_key": _b64(self.mac_key)}
        if self.master is not None:
            doc["enc_key"] = _b64(self.master.enc_key)
        if self.public is not None:
            doc["public"] = _b64(self.public)
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_payload(cls, raw: bytes) -> Grant:
        if len(raw) == 64:
            return cls.of(MasterKey.from_bytes(raw))
        try:
            doc = json.loads(raw)
            role, mac_key = check_role(doc["role"]), _unb64(doc["mac_key"])
            enc = _unb64(doc["enc_key"]) if "enc_key" in doc else None
            public = _unb64(doc["public"]) if "public" in doc else None
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"key payload undecodable ({e})") from e
        if (role == "writer") != (enc is None) or (role == "writer" and public is None):
            raise IntegrityError(f"key payload of role {role} holds the wrong keys")
        master = MasterKey(enc, mac_key) if enc is not None else None
        return cls(role, mac_key, master, public)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: object) -> bytes:
    return base64.b64decode(str(text), validate=True)


def _username() -> str:
    name = os.environ.get("LOGNAME") or os.environ.get("USER")
    if name:
        return name
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    try:
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=32)
    except ValueError as e:
        raise IntegrityError(f"key file has unusable scrypt parameters n={n} r={r} p={p}") from e


def _aad(repo_id: str) -> bytes:
    return b"chaoskit-key\0" + repo_id.encode()


def _signed_body(doc: dict[str, object]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def write_key_file(
    keys_dir: Path, repo_id: str, grant: Grant | MasterKey, password: bytes, *, scrypt_n: int
) -> tuple[str, bytes]:
    """Wrap *grant* (a master key: an admin key) under *password* into a new key file;
    return its id and its password-derived secret (what the key's audit signature is
    derived from, see :mod:`chaoskit.dr.protect.repository.audit`)."""
    if isinstance(grant, MasterKey):
        grant = Grant.of(grant)
    if not password:
        raise ConfigError("the repository password must not be empty")
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
        raise ConfigError(f"scrypt n={scrypt_n} must be a power of two >= 2")
    salt = os.urandom(16)
    kek = _derive(password, salt, scrypt_n, SCRYPT_R, SCRYPT_P)
    doc: dict[str, object] = {
        "version": 1,
        "created": time.time(),
        "hostname": os.uname().nodename,
        "username": _username(),
        "role": grant.role,
        "kdf": "scrypt",
        "n": scrypt_n,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "data": _b64(wrap(kek, grant.payload(), _aad(repo_id))),
    }
    if grant.role != "admin":
        doc["version"] = 2
    return _write_doc(keys_dir, doc, grant.mac_key), kek


def _write_doc(keys_dir: Path, doc: dict[str, object], mac_key: bytes) -> str:
    doc["mac"] = keyed_mac(mac_key, _signed_body(doc))
    key_id = os.urandom(16).hex()
    keys_dir.mkdir(parents=True, exist_ok=True)
    # 0600: a key file is the password's only guard against an offline guessing attack
    atomic_write_bytes(keys_dir / key_id, json.dumps(doc, indent=1).encode(), mode=0o600)
    return key_id


def _load_doc(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise IntegrityError(f"key file {path.name}: unreadable ({e})") from e
    if not isinstance(doc, dict):
        raise IntegrityError(f"key file {path.name}: not a key object")
    return doc


def _try_key(
    doc: dict[str, object], repo_id: str, password: bytes
) -> tuple[Grant, bytes] | None:
    try:
        salt = base64.b64decode(str(doc["salt"]), validate=True)
        data = base64.b64decode(str(doc["data"]), validate=True)
        n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])  # type: ignore[call-overload]
    except (KeyError, ValueError, TypeError):
        return None
    if doc.get("kdf") != "scrypt" or n > 2**22 or r > 64 or p > 16:
        return None
    try:
        kek = _derive(password, salt, n, r, p)
    except IntegrityError:
        return None
    raw = unwrap(kek, data, _aad(repo_id))
    if raw is None:
        return None
    try:
        return Grant.from_payload(raw), kek
    except IntegrityError:
        return None


def _is_recipient(doc: dict[str, object]) -> bool:
    return doc.get("kind") == "recipient"


def key_ids(keys_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in keys_dir.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


def open_key(keys_dir: Path, repo_id: str, password: bytes) -> tuple[Grant, str, bytes]:
    """Find the key file *password* opens; return what it grants, that file's id and its
    password-derived secret."""
    ids = key_ids(keys_dir)
    if not ids:
        raise RepositoryError(f"no key files in {keys_dir}: the repository cannot be opened")
    damaged: list[str] = []
    for key_id in ids:
        try:
            doc = _load_doc(keys_dir / key_id)
        except IntegrityError:
            damaged.append(key_id)
            continue
        if _is_recipient(doc):
            continue
        opened = _try_key(doc, repo_id, password)
        if opened is None:
            continue
        grant, secret = opened
        if not _mac_ok(doc, grant.mac_key):
            warnings.warn(f"key file {key_id} opened but its MAC does not match", stacklevel=2)
        return grant, key_id, secret
    hint = f" (unreadable key files: {', '.join(damaged)})" if damaged else ""
    raise RepositoryError(
        f"wrong password (or damaged key file): none of the {len(ids)} key file(s) in "
        f"{keys_dir} opens with it{hint}"
    )


def _mac_ok(doc: dict[str, object], mac_key: bytes) -> bool:
    return hmac.compare_digest(keyed_mac(mac_key, _signed_body(doc)), str(doc.get("mac")))


def check_key_files(keys_dir: Path, mac_key: bytes) -> dict[str, str]:
    """Key file id -> problem, for every key file whose MAC or form is wrong."""
    problems: dict[str, str] = {}
    for key_id in key_ids(keys_dir):
        try:
            doc = _load_doc(keys_dir / key_id)
        except IntegrityError as e:
            problems[key_id] = str(e)
            continue
        if not _mac_ok(doc, mac_key):
            problems[key_id] = f"key file {key_id}: MAC mismatch (damaged or tampered)"
    return problems


def _recipient_aad(repo_id: str, public: bytes) -> bytes:
    return b"chaoskit-recipient\0" + repo_id.encode() + b"\0" + public


def write_recipient(keys_dir: Path, repo_id: str, master: MasterKey) -> bytes:
    """Make the repository's X25519 key pair (private half sealed under the master key);
    return the public half."""
    private = X25519PrivateKey.generate()
    public = public_bytes(private)
    doc: dict[str, object] = {
        "version": 2,
        "kind": "recipient",
        "created": time.time(),
        "hostname": os.uname().nodename,
        "username": _username(),
        "public": _b64(public),
        "private": _b64(
            wrap(master.enc_key, private.private_bytes_raw(), _recipient_aad(repo_id, public))
        ),
    }
    _write_doc(keys_dir, doc, master.mac_key)
    return public


def load_recipients(
    keys_dir: Path, repo_id: str, master: MasterKey
) -> dict[bytes, X25519PrivateKey]:
    """Public key -> private key of every recipient file the master key opens (oldest first)."""
    found: list[tuple[float, bytes, X25519PrivateKey]] = []
    for key_id in key_ids(keys_dir):
        try:
            doc = _load_doc(keys_dir / key_id)
        except IntegrityError:
            continue
        if not _is_recipient(doc):
            continue
        try:
            public = _unb64(doc["public"])
            raw = unwrap(master.enc_key, _unb64(doc["private"]), _recipient_aad(repo_id, public))
            private = X25519PrivateKey.from_private_bytes(raw) if raw is not None else None
        except (KeyError, ValueError):
            private = None
        if private is None or public_bytes(private) != public:
            warnings.warn(f"recipient key file {key_id} does not open: skipped", stacklevel=2)
            continue
        found.append((float(doc.get("created", 0.0)), public, private))  # type: ignore[arg-type]
    return {public: private for _, public, private in sorted(found, key=lambda f: f[0])}


def list_keys(keys_dir: Path, current: str) -> list[KeyInfo]:
    infos = []
    for key_id in key_ids(keys_dir):
        try:
            doc = _load_doc(keys_dir / key_id)
        except IntegrityError:
            doc = {"role": "?"}
        if _is_recipient(doc):
            continue
        infos.append(
            KeyInfo(
                id=key_id,
                created=float(doc.get("created", 0.0)),  # type: ignore[arg-type]
                hostname=str(doc.get("hostname", "?")),
                username=str(doc.get("username", "?")),
                current=key_id == current,
                role=str(doc.get("role", "admin")),
            )
        )
    return infos


def remove_key(keys_dir: Path, key_id: str, current: str) -> str:
    """Remove a key file by id or unique prefix; refuse the one in use and the last one."""
    matches = [k.id for k in list_keys(keys_dir, current) if k.id.startswith(key_id)]
    if len(matches) != 1:
        raise ConfigError(f"key {key_id!r} matches {len(matches)} key files, expected one")
    (target,) = matches
    if target == current:
        raise RepositoryError(f"key {target[:8]} is the one opened now; use another password")
    (keys_dir / target).unlink()
    fsync_dir(keys_dir)
    return target
