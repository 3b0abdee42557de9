"""Key files: the random master key wrapped under passphrase-derived keys (scrypt).

Several key files may wrap the same master key, one per password, so a password can
be added, changed or revoked without re-encrypting any data.  Each key file also
carries a MAC made with the master key over all its fields, so ``check`` finds a
damaged key file even when nobody knows that file's password.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from chaoskit.atomic import atomic_write_bytes, fsync_dir
from chaoskit.dr.repository.crypto import Cipher, MasterKey, unwrap, wrap
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
    keys_dir: Path, repo_id: str, master: MasterKey, password: bytes, *, scrypt_n: int
) -> str:
    """Wrap *master* under *password* into a new key file; return its id."""
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
        "kdf": "scrypt",
        "n": scrypt_n,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(wrap(kek, master.to_bytes(), _aad(repo_id))).decode(),
    }
    doc["mac"] = Cipher(master).mac(_signed_body(doc))
    key_id = os.urandom(16).hex()
    keys_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(keys_dir / key_id, json.dumps(doc, indent=1).encode())
    return key_id


def _load_doc(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise IntegrityError(f"key file {path.name}: unreadable ({e})") from e
    if not isinstance(doc, dict):
        raise IntegrityError(f"key file {path.name}: not a key object")
    return doc


def _try_key(doc: dict[str, object], repo_id: str, password: bytes) -> MasterKey | None:
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
    return MasterKey.from_bytes(raw) if raw is not None else None


def key_ids(keys_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in keys_dir.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


def open_master_key(keys_dir: Path, repo_id: str, password: bytes) -> tuple[MasterKey, str]:
    """Find the key file *password* opens; return the master key and that file's id."""
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
        master = _try_key(doc, repo_id, password)
        if master is None:
            continue
        try:
            Cipher(master).verify_mac(_signed_body(doc), str(doc.get("mac")), what=key_id)
        except IntegrityError:
            warnings.warn(f"key file {key_id} opened but its MAC does not match", stacklevel=2)
        return master, key_id
    hint = f" (unreadable key files: {', '.join(damaged)})" if damaged else ""
    raise RepositoryError(
        f"wrong password (or damaged key file): none of the {len(ids)} key file(s) in "
        f"{keys_dir} opens with it{hint}"
    )


def check_key_files(keys_dir: Path, master: MasterKey) -> dict[str, str]:
    """Key file id -> problem, for every key file whose MAC or form is wrong."""
    problems: dict[str, str] = {}
    cipher = Cipher(master)
    for key_id in key_ids(keys_dir):
        try:
            doc = _load_doc(keys_dir / key_id)
            cipher.verify_mac(_signed_body(doc), str(doc.get("mac")), what=f"key file {key_id}")
        except IntegrityError as e:
            problems[key_id] = str(e)
    return problems


def list_keys(keys_dir: Path, current: str) -> list[KeyInfo]:
    infos = []
    for key_id in key_ids(keys_dir):
        try:
            doc = _load_doc(keys_dir / key_id)
        except IntegrityError:
            doc = {}
        infos.append(
            KeyInfo(
                id=key_id,
                created=float(doc.get("created", 0.0)),  # type: ignore[arg-type]
                hostname=str(doc.get("hostname", "?")),
                username=str(doc.get("username", "?")),
                current=key_id == current,
            )
        )
    return infos


def remove_key(keys_dir: Path, key_id: str, current: str) -> str:
    """Remove a key file by id or unique prefix; refuse the one in use and the last one."""
    matches = [k for k in key_ids(keys_dir) if k.startswith(key_id)]
    if len(matches) != 1:
        raise ConfigError(f"key {key_id!r} matches {len(matches)} key files, expected one")
    (target,) = matches
    if target == current:
        raise RepositoryError(f"key {target[:8]} is the one opened now; use another password")
    (keys_dir / target).unlink()
    fsync_dir(keys_dir)
    return target
