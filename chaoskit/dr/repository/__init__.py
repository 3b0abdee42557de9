"""The DR engine's backup repository: encrypted, deduplicated, model-aware recovery points."""

from __future__ import annotations

from chaoskit.dr.repository.repo import FORMAT_VERSION, Repository, init_repository, open_repository

__all__ = ["FORMAT_VERSION", "Repository", "init_repository", "open_repository"]
