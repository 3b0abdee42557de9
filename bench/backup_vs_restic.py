"""chaoskit's backup repository against restic on the same TensorFlow checkpoint series.

Generates a CheckpointManager series with TensorFlow (a ~48 MB model; the head changes
at every checkpoint, one body layer once), then, on the same data and in the same run,
times each tool as a child process: backup of the series, restore of the latest
snapshot, ``check --read-data``.  Peak RSS is each child's own (wait4), chaoskit's
measured through the ``chaoskit backup`` CLI so both are measured alike.  Medians of
``--reps`` repetitions, tool order alternating, fresh repositories each repetition.

    .venv/bin/python bench/backup_vs_restic.py [--reps 3] [--checkpoints 5] [--role writer]

``--role writer`` backs up with a write-only key (added after init; restore and check
run with the admin password), as a compromised-host-proof primary would.

Targets (issue 3): backup <= 0.5x restic, restore (with verification) <= 1.0x,
repository size <= restic's, peak RSS <= restic's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

GENERATOR = r"""
import sys
import numpy as np
import tensorflow as tf

out, count, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(7)
body = [tf.Variable(rng.standard_normal((width, width), dtype=np.float32)) for _ in range(4)]
head = tf.Variable(rng.standard_normal((width, 200), dtype=np.float32))
step = tf.Variable(0, dtype=tf.int64)
manager = tf.train.CheckpointManager(tf.train.Checkpoint(body=body, head=head, step=step),
                                     out, max_to_keep=count)
for k in range(1, count + 1):
    head.assign_add(tf.random.normal(head.shape) * 0.01)
    step.assign(k)
    if k == 3:
        body[2].assign_add(tf.random.normal(body[2].shape) * 0.01)
    manager.save(checkpoint_number=k)
"""


CHAOSKIT_BACKUP = [str(Path(sys.executable).parent / "chaoskit"), "backup"]


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process; fails loudly on error."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err}")
    return elapsed, usage.ru_maxrss


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tools(work: Path, series: Path) -> dict[str, dict[str, list[str]]]:
    chaoskit = CHAOSKIT_BACKUP
    restic = shutil.which("restic") or "restic"
    return {
        "restic": {
            "init": [restic, "init", "--repo", str(work / "restic-repo")],
            "backup": [restic, "backup", "--repo", str(work / "restic-repo"), str(series)],
            "restore": [
                restic,
                "restore",
                "--repo",
                str(work / "restic-repo"),
                "latest",
                "--target",
                str(work / "restic-out"),
            ],
            "check": [restic, "check", "--repo", str(work / "restic-repo"), "--read-data"],
        },
        "chaoskit": {
            "init": [*chaoskit, "init", "--repo", str(work / "ck-repo")],
            "backup": [*chaoskit, "run", "--repo", str(work / "ck-repo"), str(series)],
            "restore": [
                *chaoskit,
                "restore",
                "--repo",
                str(work / "ck-repo"),
                "latest",
                "--target",
                str(work / "ck-out"),
            ],
            "check": [*chaoskit, "check", "--repo", str(work / "ck-repo"), "--read-data"],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--width", type=int, default=1700, help="body layer width")
    parser.add_argument("--workdir", type=Path, help="keep everything here")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--role", choices=("admin", "writer"), default="admin", help="chaoskit's backup key"
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="chaoskit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    series = work / "series"
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "RESTIC_PASSWORD": "bench",
        "CHAOSKIT_PASSWORD": "bench",
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    if not (series / "checkpoint").exists():
        subprocess.run(
            [sys.executable, "-c", GENERATOR, str(series), str(args.checkpoints), str(args.width)],
            env=env,
            check=True,
        )
    source_bytes = tree_size(series)
    version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout
    print(
        f"series: {args.checkpoints} checkpoints, {source_bytes / 1e6:.1f} MB; "
        f"{version.strip()}; {os.cpu_count()} CPUs; {args.reps} repetitions"
    )
    times: dict[str, dict[str, list[float]]] = {"restic": {}, "chaoskit": {}}
    rss: dict[str, dict[str, int]] = {"restic": {}, "chaoskit": {}}
    sizes: dict[str, int] = {}
    for rep in range(args.reps):
        order = ["restic", "chaoskit"] if rep % 2 == 0 else ["chaoskit", "restic"]
        commands = tools(work, series)
        for tool in order:
            for leftover in ("restic-repo", "ck-repo", "restic-out", "ck-out", "restic-cache"):
                if leftover.startswith("restic" if tool == "restic" else "ck"):
                    shutil.rmtree(work / leftover, ignore_errors=True)
            run_child(commands[tool]["init"], env)
            backup_env = env
            if tool == "chaoskit" and args.role == "writer":
                add = [*CHAOSKIT_BACKUP, "key", "add", "--role", "writer"]
                add += ["--repo", str(work / "ck-repo")]
                run_child(add, {**env, "CHAOSKIT_NEW_PASSWORD": "bench writer"})
                backup_env = {**env, "CHAOSKIT_PASSWORD": "bench writer"}
            for op in ("backup", "restore", "check"):
                elapsed, peak = run_child(commands[tool][op], backup_env if op == "backup" else env)
                times[tool].setdefault(op, []).append(elapsed)
                rss[tool][op] = max(rss[tool].get(op, 0), peak)
            sizes[tool] = tree_size(work / ("restic-repo" if tool == "restic" else "ck-repo"))
        restored = work / "ck-out"
        if tree_size(restored) != source_bytes:
            raise SystemExit("chaoskit restore is incomplete")
    rows = []
    print(f"\n{'operation':22} {'restic':>10} {'chaoskit':>10} {'ratio':>7}  target")
    for op, target in (("backup", 0.5), ("restore", 1.0), ("check", None)):
        r = statistics.median(times["restic"][op])
        c = statistics.median(times["chaoskit"][op])
        goal = f"<= {target:.1f}x {'ok' if c / r <= target else 'MISSED'}" if target else ""
        print(f"{op + ' (s, median)':22} {r:10.3f} {c:10.3f} {c / r:7.2f}  {goal}")
        rows.append({"op": op, "restic_s": r, "chaoskit_s": c, "ratio": c / r})
    r_size, c_size = sizes["restic"], sizes["chaoskit"]
    print(
        f"{'repository (MB)':22} {r_size / 1e6:10.1f} {c_size / 1e6:10.1f} "
        f"{c_size / r_size:7.2f}  <= 1.0x {'ok' if c_size <= r_size else 'MISSED'}"
    )
    r_rss, c_rss = max(rss["restic"].values()), max(rss["chaoskit"].values())
    print(
        f"{'peak RSS (MB)':22} {r_rss / 1024:10.1f} {c_rss / 1024:10.1f} "
        f"{c_rss / r_rss:7.2f}  <= 1.0x {'ok' if c_rss <= r_rss else 'MISSED'}"
    )
    for tool in ("restic", "chaoskit"):
        per_op = ", ".join(f"{op} {kib / 1024:.0f}" for op, kib in rss[tool].items())
        print(f"  peak RSS {tool} per operation (MB): {per_op}")
    sample = next(series.glob("*.data-*")).read_bytes()[: 16 << 20]
    started = time.perf_counter()
    packed = zlib.compress(sample, 1)
    rate = len(sample) / (time.perf_counter() - started) / 1e6
    print(
        f"  compression (why chaoskit stores tensors uncompressed): zlib level 1 on a data "
        f"shard saves {1 - len(packed) / len(sample):.1%} at {rate:.0f} MB/s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"rows": rows, "sizes": sizes, "rss_kib": rss, "source_bytes": source_bytes},
                indent=1,
            )
        )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
