"""Ransomware on the primary host: its files encrypted, its DR-site credentials abused.

The attacker holds everything the primary holds: the backup agent's write-only key, the
replicator's DR-site token, every file.  It first goes for the off-site copy with that
token (delete and overwrite a recovery point, truncate one to nothing, delete the
repository config, truncate and roll back the audit log, guess an admin token) and for
the local repository with the writer key (forget, prune), then encrypts in place (AES-256-CTR,
a key only it had) every file of the local backup repository, the model store and the
checkpoints.  Every attempt is journaled with its answer; the drill expects each one refused.

Revert puts back, from copies kept beside the run, each file still exactly as the
attacker left it: what the DR engine restored or replaced stays as it is.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from chaoskit.errors import ChaosKitError, FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.faults.storage import originals_dir, restore_file, sha256_file

MARKER = b"\nCHAOSKIT-RANSOMWARE: pay 1 BTC to get your model back\n"
"""Appended to every encrypted file (and makes each one change size)."""


@dataclass(frozen=True)
class Encrypted:
    path: Path
    sha256_after: str
    original: Path


def _request(
    endpoint: tuple[str, int], method: str, path: str, token: str, body: bytes | None = None
) -> int:
    """The HTTP status the DR site answers (0 when it could not be reached)."""
    conn = http.client.HTTPConnection(endpoint[0], endpoint[1], timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["X-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def _files(root: Path, skip: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and skip not in p.parents)


@dataclass(frozen=True)
class Ransomware(Fault):
    """Encrypt the primary's repository, models and checkpoints; attack the DR site."""

    kind: ClassVar[str] = "ransomware"
    encrypt: tuple[str, ...] = ("repository", "models", "checkpoints")

    def __post_init__(self) -> None:
        unknown = set(self.encrypt) - {"repository", "models", "checkpoints"}
        if unknown:
            raise FaultError(f"ransomware: encrypt {sorted(unknown)!r}: expected any of "
                             "'repository', 'models', 'checkpoints'")  # fmt: skip

    def _inject(self, ctx: FaultContext) -> Changes:
        stack = ctx.stack
        if getattr(stack, "dr_site", None) is None:
            raise FaultError("ransomware: the stack has no DR site to attack")
        attempts = self._attack_site(stack) + self._attack_repository(stack)
        keep = originals_dir(ctx)
        roots = {"repository": Path(stack.repository), "models": Path(stack.model_base_path)}
        if stack.checkpoint_dir is not None:
            roots["checkpoints"] = Path(stack.checkpoint_dir)
        key, done = os.urandom(32), []
        counts = {}
        for name in self.encrypt:
            files = _files(roots[name], keep.parent) if name in roots else []
            counts[name] = 0
            for path in files:
                encrypted = self._encrypt(path, key, keep / name / path.relative_to(roots[name]))
                if encrypted is not None:
                    done.append(encrypted)
                    counts[name] += 1
        record = {"encrypted": counts, "attempts": attempts,
                  "refused": sum(a["refused"] for a in attempts)}  # fmt: skip
        return Changes(record=record, undo=(keep, done))

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        keep, done = changes.undo
        for item in done:
            if item.original.exists() and sha256_file(item.path) == item.sha256_after:
                restore_file(item.original, item.path)
        shutil.rmtree(keep, ignore_errors=True)

    @staticmethod
    def _encrypt(path: Path, key: bytes, original: Path) -> Encrypted | None:
        """Encrypt *path* in place, a copy kept as *original*; None if it vanished."""
        original.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, original)
            nonce = os.urandom(16)
            encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
            data = path.read_bytes()
            ciphertext = nonce + encryptor.update(data) + encryptor.finalize() + MARKER
            with open(path, "r+b") as f:
                f.write(ciphertext)
                f.truncate(len(ciphertext))
                f.flush()
                os.fsync(f.fileno())
        except FileNotFoundError:  # a trainer's rotation removed it meanwhile
            return None
        return Encrypted(path, hashlib.sha256(ciphertext).hexdigest(), original)

    @staticmethod
    def _attack_site(stack: Any) -> list[dict[str, Any]]:
        """Everything the replicator's token might do to the off-site copy."""
        endpoint = stack.dr_site_endpoint  # a method on a running stack: where it is now
        endpoint = endpoint() if callable(endpoint) else endpoint
        token = Path(stack.dr_site_token_file).read_text().strip()
        conn = http.client.HTTPConnection(endpoint[0], endpoint[1], timeout=10)
        try:
            conn.request("GET", "/files", headers={"Authorization": f"Bearer {token}"})
            listing = json.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise FaultError(f"ransomware: could not list the DR site: {e}") from e
        finally:
            conn.close()
        snapshots = sorted(p for p in listing if p.startswith("snapshots/"))
        audit = sorted(p for p in listing if p.startswith("audit/"))
        if not snapshots or len(audit) < 2:
            raise FaultError("ransomware: the DR site holds no recovery point and audit "
                             "entries yet to attack")  # fmt: skip
        point, newest, oldest = snapshots[-1], audit[-1], audit[0]
        old_entry = (Path(stack.repository) / oldest).read_bytes()
        tries = [
            ("delete a recovery point", "DELETE", point, token, None),
            ("overwrite a recovery point", "PUT", point, token, os.urandom(4096)),
            ("truncate a recovery point", "PUT", point, token, b""),
            ("delete the repository config", "DELETE", "config", token, None),
            ("truncate the audit log", "DELETE", newest, token, None),
            ("roll back the audit log", "PUT", newest, token, old_entry),
            ("delete with a guessed admin token", "DELETE", point, "admin", None),
        ]
        attempts = []
        for what, method, path, credential, body in tries:
            status = _request(endpoint, method, f"/files/{path}", credential, body)
            attempts.append({"what": what, "method": method, "path": path, "status": status,
                             "refused": 400 <= status < 500})  # fmt: skip
        return attempts

    @staticmethod
    def _attack_repository(stack: Any) -> list[dict[str, Any]]:
        """Forget and prune with the write-only key the backup agent holds."""
        from chaoskit.dr.protect.repository.repo import open_repository

        password = Path(stack.writer_password_file).read_text().strip()
        writer = open_repository(stack.repository, password)
        attempts = []
        for what, call in (("forget every recovery point with the writer key",
                            lambda: writer.forget(ids=[p.id for p in writer.recovery_points()])),
                           ("prune with the writer key", writer.prune)):  # fmt: skip
            try:
                call()
                refused, error = False, ""
            except ChaosKitError as e:
                refused, error = True, str(e)
            attempts.append({"what": what, "refused": refused, "error": error})
        return attempts
