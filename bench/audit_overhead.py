"""What the audit log costs a backup: the same backups with the audit entry written and
with it skipped, interleaved in one run (issue "Security of the DR engine": <= 5 %).

Each round backs up a directory of fresh random content (nothing deduplicates, so each
backup does its full work) into one repository, once with the audit entry and once
without, alternating which goes first.  Two sizes: a small model version (1 MB, where a
fixed cost shows most) and a checkpoint-sized one (48 MB).  Medians of ``--rounds``.

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


def timed_backup(repo, src: Path, size: int, audited: bool) -> float:  # type: ignore[no-untyped-def]
    (src / "weights.data").write_bytes(os.urandom(size))
    log = repo.audit_log
    if not audited:
        repo.audit_log = Unaudited(repo.root, log.signer, log.key_id, log.role)
    try:
        started = time.perf_counter()
        repo.backup(src)
        return time.perf_counter() - started
    finally:
        repo.audit_log = log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"{'backup size':>12}  {'with audit':>11}  {'without':>9}  {'overhead':>8}")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="chaoskit-audit-bench-") as tmp:
        for size in (1 << 20, 48 << 20):
            repo = init_repository(Path(tmp) / f"repo-{size}", "pw", scrypt_n=2**10)
            src = Path(tmp) / f"src-{size}"
            src.mkdir()
            timed_backup(repo, src, size, True)  # warm caches once
            with_audit, without = [], []
            for i in range(args.rounds):
                arms = [(True, with_audit), (False, without)]
                for audited, times in arms if i % 2 == 0 else arms[::-1]:
                    times.append(timed_backup(repo, src, size, audited))
            a, b = statistics.median(with_audit), statistics.median(without)
            worst = max(worst, a / b - 1)
            print(f"{size >> 20:>9} MB  {a * 1000:>8.1f} ms  {b * 1000:>6.1f} ms  "
                  f"{(a / b - 1) * 100:>+7.1f}%")  # fmt: skip
    print(f"worst overhead {worst * 100:+.1f}% (target <= +5%)")
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
