"""The DR site as witness of the audit log: what it saw, countersigned, off the primary.

A hash chain shows a rewritten entry, but a log cut back to an earlier entry (truncated
or rolled back) still ends on a valid one.  The replicator ships every audit entry to
the DR site, whose append-only store keeps the first bytes it got for each; the site
checks each new entry against the chain it has seen (:class:`ChainVerifier`) and signs a
checkpoint, the length and head hash of the longest valid prefix, with a key of its
own that never leaves the site (``.witness/key``, 0600).  ``chaoskit audit verify
--site`` compares the primary's log with that checkpoint: a primary whose log is
shorter, or whose entry at the checkpoint hashes differently, was cut back or rewritten.

The site also keeps an access log of its own, in the same signed-chain form
(``.witness/audit/``, signed with the site key): every refused request (bad or missing
token, a path that is no repository file, an overwrite, an oversized body, garbage),
with method, path, status, reason and client address.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chaoskit.atomic import atomic_write_bytes, ensure_secret_file
from chaoskit.dr.protect.repository.audit import (
    AUDIT_DIR,
    AuditLog,
    ChainVerifier,
    _canonical,
    entry_name,
    public_text,
    read_entry,
    read_log,
    verify_entries,
)
from chaoskit.errors import IntegrityError

WITNESS_DIR = ".witness"
CHECKPOINT = "checkpoint.json"


class Witness:
    """Follows the audit entries stored at a DR site and keeps a signed checkpoint."""

    def __init__(self, site_root: Path) -> None:
        self.root = site_root
        self.dir = site_root / WITNESS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        secret = ensure_secret_file(self.dir / "key", 32)
        seed = hashlib.sha256(secret.encode()).digest()
        self.key = Ed25519PrivateKey.from_private_bytes(seed)
        self.verifier = ChainVerifier()
        self._lock = threading.Lock()
        self.access_log = AuditLog(self.dir, self.key, "dr-site", "site")
        self._access_lock = threading.Lock()
        self.observe()

    def refused(self, method: str, path: str, status: int, reason: str, client: str) -> None:
        """Audit one refused request (the path cut short: it is the client's text)."""
        with self._access_lock:
            self.access_log.append("site request", "refused", method=method[:16],
                                   path=path[:200], status=status, reason=reason[:200],
                                   client=client)  # fmt: skip

    def observe(self) -> dict[str, Any]:
        """Check every stored entry after the witnessed prefix; re-sign if it grew."""
        with self._lock:
            before = self.verifier.verdict.entries
            while self.verifier.verdict.ok:
                path = self.root / AUDIT_DIR / entry_name(self.verifier.verdict.entries)
                if not path.exists():
                    break
                try:
                    entry = read_entry(path.parent, self.verifier.verdict.entries)
                except IntegrityError:
                    break
                self.verifier.add(entry)
            if before != self.verifier.verdict.entries or not (self.dir / CHECKPOINT).exists():
                atomic_write_bytes(self.dir / CHECKPOINT, json.dumps(self._sign()).encode())
            return self.checkpoint()

    def admits(self, rel: str, data: bytes) -> str | None:
        """Why *data* may not be stored as the audit entry *rel*; None when it is the next
        valid entry of the chain seen so far.  Checked before it is stored: a garbled or
        unchained entry taking the next place would jam the log's replication for ever
        (every later entry is refused as out of order)."""
        with self._lock:
            verifier = copy.deepcopy(self.verifier)
        try:
            entry = json.loads(data)
        except ValueError:
            return "not an audit entry (unparseable)"
        if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
            return "not an audit entry (no sequence number)"
        if f"{AUDIT_DIR}/{entry_name(entry['seq'])}" != rel:
            return f"it is entry {entry['seq']}, not {rel}"
        if not verifier.add(entry):
            return verifier.verdict.problem
        return None

    def _sign(self) -> dict[str, Any]:
        verdict = self.verifier.verdict
        doc: dict[str, Any] = {"length": verdict.entries, "head": verdict.head,
                               "time": time.time(), "site": public_text(self.key),
                               "problem": verdict.problem}  # fmt: skip
        doc["sig"] = base64.b64encode(self.key.sign(_canonical(doc))).decode()
        return doc

    def checkpoint(self) -> dict[str, Any]:
        return dict(json.loads((self.dir / CHECKPOINT).read_bytes()))


def checkpoint_signed(doc: dict[str, Any], pinned: str | None = None) -> bool:
    """Whether *doc* is signed by the site key it names (and that key is *pinned*)."""
    body = {k: v for k, v in doc.items() if k != "sig"}
    if pinned is not None and doc.get("site") != pinned:
        return False
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(doc["site"])))
        public.verify(base64.b64decode(str(doc["sig"])), _canonical(body))
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return False
    return True


def load_checkpoint(site_root: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((site_root / WITNESS_DIR / CHECKPOINT).read_bytes()))
    except (OSError, ValueError) as e:
        raise IntegrityError(f"DR site {site_root}: no readable witness checkpoint ({e})") from e


def compare_with_witness(
    repo_root: Path, checkpoint: dict[str, Any], *, pinned: str | None = None
) -> str | None:
    """None when the primary's log extends what the DR site witnessed; else the problem."""
    if not checkpoint_signed(checkpoint, pinned):
        return "the DR site's checkpoint is not signed by the site's key (forged or pin mismatch)"
    length, head = int(checkpoint["length"]), str(checkpoint["head"])
    entries = read_log(repo_root)
    verdict = verify_entries(entries[:length])
    if verdict.entries < length:
        if len(entries) < length:
            return (f"the DR site witnessed {length} entries, the local log has only "
                    f"{len(entries)}: it was truncated or rolled back")  # fmt: skip
        return f"the local log breaks before the witnessed {length} entries: {verdict.problem}"
    if verdict.head != head:
        return (f"entry {length - 1} differs from the one the DR site witnessed: the local "
                "log was rewritten")  # fmt: skip
    return None
