"""Ransomware drill: the primary host is lost to an attacker; the DR site must not be.

Under load and with the trainer running, the attacker (:class:`~chaoskit.faults.Ransomware`)
uses what the primary holds — the backup agent's write-only key, the replicator's DR-site
token, every file — to delete, overwrite, truncate and roll back the off-site copy and
its audit log, to forget and prune with the writer key, and then encrypts the local
backup repository, every model version and every checkpoint in place.

Expected: every attempt is refused (and audited by the DR site); the DR engine detects
the damage, fetches the repository back from the DR site (the local one is destroyed),
restores the model versions and the checkpoints from it, and serving keeps answering
correctly from memory meanwhile; the report has TTD, RTO and RPO (steps and seconds) of a
recovery from the off-site copy; ``chaoskit audit verify`` afterwards finds the chain
intact and names the attacker's refused requests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaoskit.dr.protect.repository.source import STATE_FILE, parse_checkpoint_state
from chaoskit.dr.protect.store_guard import WATCHED_VERSIONS
from chaoskit.faults import Ransomware
from chaoskit.faults.ransomware import MARKER
from chaoskit.waiting import wait_until

SITE_ATTEMPTS = 7
"""Requests the attacker makes of the DR site (see chaoskit/faults/ransomware.py)."""


@pytest.mark.chaos_needs("dr-site")
@pytest.mark.chaos(ttd="2s", rto="60s", rpo="60s")
def test_ransomware_drill(chaos):
    stack = chaos.stack
    # the attacker strikes once the DR site holds this window's recovery points
    chaos.wait_for("backup.replicated", count=2)
    with chaos.inject(Ransomware()):
        assert chaos.wait_recovered(), "the DR engine did not recover from the ransomware"
        # recovered is not enough: every guarded file must be back before the revert
        # (which puts back whatever the attacker's copy still holds) could hide one
        wait_until(lambda: not still_encrypted(stack), 30, what="no guarded file encrypted")
    result = chaos.verify()
    events = chaos.events()

    (attack,) = [e for e in events if e["event"] == "fault.injected"]
    attempts = attack["changes"]["attempts"]
    assert [a["what"] for a in attempts if not a["refused"]] == [], attempts
    assert len(attempts) == SITE_ATTEMPTS + 2
    assert all(n > 0 for n in attack["changes"]["encrypted"].values()), attack["changes"]

    fetched = [e for e in events if e["event"] == "recovered"
               and e.get("action") == "fetch-from-dr-site"]  # fmt: skip
    assert fetched, "the repository was not fetched from the DR site"
    assert all(e["check_ok"] for e in fetched), fetched
    restored = [e for e in events if e["event"] == "restore.done" and e["t"] > fetched[0]["t"]]
    kinds = {str(e.get("kind")) for e in restored}
    assert "model-version" in kinds and any(k.startswith("checkpoint") for k in kinds), restored
    assert result.integrity is True
    assert result.wrong_predictions == 0
    assert result.rpo_s is not None and result.rpo_steps is not None

    audit = subprocess.run(
        [sys.executable, "-m", "chaoskit.cli", "audit", "verify", "--repo", str(stack.repository),
         "--site", str(Path(stack.dr_site_root))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    assert "chain and signatures intact" in audit.stdout
    named = [line for line in audit.stdout.splitlines() if line.startswith("  refused")]
    for attempt in attempts[:SITE_ATTEMPTS]:
        assert any(f"{attempt['method']} /files/{attempt['path']}" in line for line in named), (
            attempt, audit.stdout)  # fmt: skip


def still_encrypted(stack) -> list[Path]:
    """Files of the guarded model versions (the newest few) and of the checkpoints the
    state file lists that still hold the attacker's encryption (a state file that does
    not parse counts)."""
    base = Path(stack.model_base_path)
    versions = sorted((int(p.name) for p in base.iterdir() if p.name.isdigit()), reverse=True)
    found = [path for version in versions[:WATCHED_VERSIONS]
             for path in files_in(base / str(version)) if encrypted(path)]  # fmt: skip
    checkpoints = Path(stack.checkpoint_dir)
    try:
        state = parse_checkpoint_state((checkpoints / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError):
        state = None
    if state is None:
        return [*found, checkpoints / STATE_FILE]
    for name in state.all_paths:
        for path in checkpoints.glob(f"{Path(name).name}.*"):
            if path.suffix != ".json" and encrypted(path):
                found.append(path)
    return found


def files_in(directory: Path) -> list[Path]:
    """Every file under *directory*; one that goes meanwhile (a restore swapping a
    version in) is skipped, not an error."""
    return [Path(root, name) for root, _, names in os.walk(directory) for name in names]


def encrypted(path: Path) -> bool:
    try:
        return path.is_file() and path.read_bytes().endswith(MARKER)
    except FileNotFoundError:  # the trainer's rotation removed it meanwhile
        return False
