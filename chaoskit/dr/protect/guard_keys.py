"""The keys of the DR engine's local repository: the keeper's, which reads and restores,
and the write-only key its backups and the replicator run with."""

from __future__ import annotations

import secrets
from pathlib import Path

from chaoskit.atomic import atomic_write_text, ensure_secret_file
from chaoskit.dr.protect.repository.repo import Repository, init_repository, open_repository


def open_backup_repository(path: Path, *, password_file: Path | None = None) -> Repository:
    """Open (or create) the backup repository at *path*; its password file (default: beside
    it) is made (0600) when missing."""
    password = ensure_secret_file(password_file or path.with_name(path.name + ".password"), 24)
    if (path / "config").exists():
        return open_repository(path, password)
    return init_repository(path, password, scrypt_n=2**14)


def open_writer(keeper: Repository, password_file: Path) -> Repository:
    """The repository opened with its write-only key, which the backup agent and the
    replicator use (they must not be able to read, restore or forget what they ship); the
    key is added and its password file written (0600) when missing.  The key is added
    before its file is written: a crash between leaves an unused key, never a password
    file that opens nothing."""
    if password_file.exists():
        return open_repository(keeper.root, password_file.read_text().strip())
    password = secrets.token_urlsafe(24)
    keeper.add_key(password, role="writer", scrypt_n=2**14)
    atomic_write_text(password_file, password + "\n", mode=0o600)
    return open_repository(keeper.root, password)
