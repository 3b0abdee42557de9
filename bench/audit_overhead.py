"""What the audit log costs a backup (issue "Security of the DR engine": <= 5 %).

Each round backs up a directory of fresh random content (nothing deduplicates, so each
backup does its full work) into one repository, once with the audit entry and once
without, alternating which goes first.  Two sizes: a small model version (1 MB, where a
fixed cost shows most) and a checkpoint-sized one (48 MB).  Medians of ``--rounds``.

Two figures: the *paired* overhead times the audit append inside each audited backup
(its share of that same backup: no run-to-run noise; the target is held to it), and the
*A/B* overhead compares the medians of the two arms, which on a shared disk moves by
several percent either way (page-cache writeback of the 48 MB rounds).

    .venv/bin/python bench/audit_overhead.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from chaoskit.dr import init_repository
from chaoskit.dr.protect.repository.audit import AuditLog


class Unaudited(AuditLog):
    """The same repository with the audit entry skipped: the comparison's other arm."""

    def append(self, operation: str, outcome: str, **details: object) -> dict[str, object]:
        return {}


class Timed(AuditLog):
    """The real audit log, timing its own appends."""

    spent = 0.0

    def append(self, operation: str, outcome: str, **details: object) -> dict[str, object]:
        started = time.perf_counter()
        try:
            return super().append(operation, outcome, **details)
        finally:
            self.spent += time.perf_counter() - started


def timed_backup(repo, src: Path, size: int, audited: bool) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(the backup's seconds, of which in the audit append)."""
    (src / "weights.data").write_bytes(os.urandom(size))
    log = repo.audit_log
    arm = Timed if audited else Unaudited
    repo.audit_log = arm(repo.root, log.signer, log.key_id, log.role)
    try:
        started = time.perf_counter()
        repo.backup(src)
        return time.perf_counter() - started, getattr(repo.audit_log, "spent", 0.0)
    finally:
        repo.audit_log = log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"{'backup size':>12}  {'with audit':>11}  {'without':>9}  {'A/B':>7}  "
          f"{'append':>8}  {'paired':>7}")  # fmt: skip
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="chaoskit-audit-bench-") as tmp:
        for size in (1 << 20, 48 << 20):
            repo = init_repository(Path(tmp) / f"repo-{size}", "pw", scrypt_n=2**10)
            src = Path(tmp) / f"src-{size}"
            src.mkdir()
            timed_backup(repo, src, size, True)  # warm caches once
            with_audit: list[float] = []
            without: list[float] = []
            shares: list[float] = []
            appends: list[float] = []
            for i in range(args.rounds):
                for audited in (True, False) if i % 2 == 0 else (False, True):
                    total, spent = timed_backup(repo, src, size, audited)
                    (with_audit if audited else without).append(total)
                    if audited:
                        appends.append(spent)
                        shares.append(spent / (total - spent))
            a, b = statistics.median(with_audit), statistics.median(without)
            paired = statistics.median(shares)
            worst = max(worst, paired)
            print(f"{size >> 20:>9} MB  {a * 1000:>8.1f} ms  {b * 1000:>6.1f} ms  "
                  f"{(a / b - 1) * 100:>+6.1f}%  {statistics.median(appends) * 1000:>5.2f} ms  "
                  f"{paired * 100:>+6.1f}%")  # fmt: skip
    print(f"worst paired overhead {worst * 100:+.1f}% (target <= +5%)")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
