"""The audit log: who did what to the repository, in a hash chain signed by the actors.

Every repository operation (init, backup, restore, verify, check, forget, prune, key
add/remove/passwd), allowed or refused, appends one entry to ``audit/`` in the
repository: a file ``<seq>.json`` holding the operation, its outcome, the acting key
and its role, details, the SHA-256 of the previous entry (``prev``) and an Ed25519
signature by the acting key.  The signing key is derived from the key file's
password-derived key, so only whoever knows that password signs as that key; a key's
public half enters the log in the entry that made the key (``init``, ``key add``,
``key passwd``), signed by a key already trusted, so a signer the log never introduced
is caught.  An entry is published with ``link`` (fails if the name exists), so two
writers never both get the same place in the chain.

The chain catches a rewritten, forged or reordered entry; a truncated or rolled-back
log ends on a valid entry, which only a witness that saw the longer log can catch
(the DR site: :mod:`chaoskit.dr.protect.site`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chaoskit.atomic import fsync_dir
from chaoskit.errors import IntegrityError

AUDIT_DIR = "audit"
GENESIS = "0" * 64
"""``prev`` of the first entry."""
_NAME = re.compile(r"^(\d{12})\.json$")
INTRODUCING = ("init", "key add", "key passwd")
"""Operations whose entry brings a new key's signer into the log (``details.signer``)."""


def signing_key(key_secret: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key a repository key signs audit entries with, derived from the key
    file's password-derived secret (so it is never stored)."""
    seed = hmac.new(key_secret, b"chaoskit-audit-signing-key", hashlib.sha256).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes_raw()).decode()


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


def entry_name(seq: int) -> str:
    return f"{seq:012d}.json"


def entry_seqs(audit_dir: Path) -> list[int]:
    try:
        names = os.listdir(audit_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _NAME.match(n)))


def read_entry(audit_dir: Path, seq: int) -> dict[str, Any]:
    path = audit_dir / entry_name(seq)
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise IntegrityError(f"audit entry {seq}: unreadable ({e})") from e
    if not isinstance(doc, dict):
        raise IntegrityError(f"audit entry {seq}: not an entry object")
    return doc


class AuditLog:
    """Appends to one repository's audit log as one signing key."""

    def __init__(self, repo_root: Path, signer: Ed25519PrivateKey, key_id: str, role: str):
        self.dir = repo_root / AUDIT_DIR
        self.signer = signer
        self.key_id = key_id
        self.role = role
        self._public = public_text(signer)
        self._head: tuple[int, str] | None = None  # (seq, hash) of the newest entry seen

    def _read_head(self) -> tuple[int, str]:
        seqs = entry_seqs(self.dir)
        if not seqs:
            return -1, GENESIS
        return seqs[-1], entry_hash(read_entry(self.dir, seqs[-1]))

    def append(self, operation: str, outcome: str, **details: Any) -> dict[str, Any]:
        """Sign and publish one entry after the newest one; returns it."""
        self.dir.mkdir(exist_ok=True)
        head = self._head
        if head is None or not (self.dir / entry_name(head[0])).exists():
            head = self._read_head()  # first entry, or the log was replaced (a recovery
            # from the DR site's copy, which may be shorter): chain after what is there
        while True:
            entry: dict[str, Any] = {
                "seq": head[0] + 1, "prev": head[1], "time": time.time(),
                "op": operation, "outcome": outcome, "key": self.key_id, "role": self.role,
                "host": os.uname().nodename, "signer": self._public, "details": details,
            }  # fmt: skip
            entry["sig"] = base64.b64encode(self.signer.sign(_canonical(entry))).decode()
            data = _canonical(entry)  # the file holds the canonical form: hashed as it is
            if self._publish(entry["seq"], data):
                self._head = (entry["seq"], hashlib.sha256(data).hexdigest())
                return entry
            head = self._read_head()  # another writer took that place: chain after it

    def _publish(self, seq: int, data: bytes) -> bool:
        final = self.dir / entry_name(seq)
        tmp = self.dir / f".{final.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(self.dir)
        return True


@dataclass
class Verdict:
    """What ``audit verify`` found: entries checked and the first problem, if any."""

    entries: int = 0
    head: str = GENESIS
    problem: str | None = None
    bad_seq: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def _verify_signature(entry: dict[str, Any]) -> bool:
    body = {k: v for k, v in entry.items() if k != "sig"}
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["signer"]))
        public.verify(base64.b64decode(entry["sig"]), _canonical(body))
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return False
    return True


class ChainVerifier:
    """Checks entries one at a time, in order: the chain (seq, prev), the signature, and
    that the signer was introduced by an earlier entry (the first entry's signer is the
    log's root of trust).  Incremental, so a witness can follow a growing log."""

    def __init__(self) -> None:
        self.verdict = Verdict()
        self._trusted: dict[str, str] = {}  # key id -> signer

    def add(self, entry: dict[str, Any]) -> bool:
        """Check the next entry; False (and ``verdict.problem`` set) at the first bad one."""
        verdict = self.verdict
        if not verdict.ok:
            return False
        seq, expected = entry.get("seq"), verdict.entries
        problem = None
        key, signer = str(entry.get("key")), str(entry.get("signer"))
        if seq != expected:
            problem = f"expected entry {expected} here (entries missing or reordered)"
        elif entry.get("prev") != verdict.head:
            problem = "its prev hash does not match the entry before it (rewritten or forged)"
        elif not _verify_signature(entry):
            problem = "its signature does not verify (the entry was changed after signing)"
        elif seq != 0 and self._trusted.get(key) != signer:
            problem = f"signed by key {key[:8]}, which no earlier entry introduced"
        if problem is not None:
            verdict.problem, verdict.bad_seq = f"audit entry {seq}: {problem}", seq
            return False
        if seq == 0:
            self._trusted[key] = signer
        details = entry.get("details") or {}
        if entry.get("outcome") == "ok" and entry.get("op") in INTRODUCING:
            if details.get("new_key") and details.get("signer"):
                self._trusted[str(details["new_key"])] = str(details["signer"])
        if entry.get("outcome") == "ok" and entry.get("op") in ("key remove", "key passwd"):
            self._trusted.pop(str(details.get("removed_key")), None)
        verdict.entries, verdict.head = expected + 1, entry_hash(entry)
        return True


def verify_entries(entries: Iterable[dict[str, Any]]) -> Verdict:
    verifier = ChainVerifier()
    for entry in entries:
        if not verifier.add(entry):
            break
    return verifier.verdict


def read_log(repo_root: Path) -> list[dict[str, Any]]:
    """Every entry in order of seq (a gap or an unreadable entry shows in verify)."""
    audit_dir = repo_root / AUDIT_DIR
    entries = []
    for seq in entry_seqs(audit_dir):
        try:
            entries.append(read_entry(audit_dir, seq))
        except IntegrityError:
            entries.append({"seq": seq, "unreadable": True})
    return entries


def verify_log(repo_root: Path) -> Verdict:
    entries = read_log(repo_root)
    verdict = verify_entries(entries)
    if not entries:
        verdict.problem = f"repository {repo_root} has no audit log"
    return verdict
