"""Real TensorFlow checkpoints: the backup agent, the bundle reader and restore.

A trainer subprocess saves checkpoints with tf.train.CheckpointManager (the head
changes every step, one body layer once) while ``chaoskit backup watch`` runs as
another subprocess.  The trainer waits for each recovery point in the journal before
the next save, so every checkpoint must be backed up, and then a TensorFlow subprocess
loads every restored checkpoint and compares each tensor with what was saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chaoskit.dr import open_repository, read_bundle_index
from chaoskit.dr.protect.repository.repo import init_repository
from chaoskit.dr.protect.repository.source import read_checkpoint_state
from chaoskit.journal import read_journal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKPOINTS = 4
HEAD_BYTES = 256 * 10 * 4
LAYER_BYTES = 256 * 256 * 4

TRAINER = r"""
import hashlib, json, os, sys, time
import numpy as np
import tensorflow as tf

ckpt_dir, journal, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
body = [tf.Variable(rng.random((256, 256), dtype=np.float32)) for _ in range(3)]
head = tf.Variable(rng.random((256, 10), dtype=np.float32))
step = tf.Variable(0, dtype=tf.int64)
manager = tf.train.CheckpointManager(tf.train.Checkpoint(body=body, head=head, step=step),
                                     ckpt_dir, max_to_keep=10)
info = {}
for k in range(1, count + 1):
    head.assign_add(tf.ones_like(head))
    step.assign(k)
    if k == 3:
        body[1].assign_add(tf.ones_like(body[1]))
    path = manager.save(checkpoint_number=k)
    prefix = os.path.basename(path)
    reader = tf.train.load_checkpoint(path)
    info[prefix] = {
        name: {"shape": shape,
               "sha256": None if name.startswith("_") else
               hashlib.sha256(reader.get_tensor(name).tobytes()).hexdigest()}
        for name, shape in tf.train.list_variables(path)}
    deadline = time.monotonic() + 90
    while f'"checkpoint":"{prefix}"' not in (open(journal).read() if os.path.exists(journal)
                                             else ""):
        if time.monotonic() > deadline:
            sys.exit(f"no recovery point for {prefix} within 90 s")
        time.sleep(0.05)
module = tf.Module()
module.body, module.head = body, head
module.predict = tf.function(lambda x: tf.matmul(x, module.head),
                             input_signature=[tf.TensorSpec([None, 256], tf.float32)])
tf.saved_model.save(module, os.path.join(os.path.dirname(out), "served", "mnist", "1"))
info["_served_sum"] = float(tf.reduce_sum(module.predict(tf.ones([1, 256]))).numpy())
with open(out, "w") as f:
    json.dump(info, f)
"""

LOADER = r"""
import hashlib, json, os, sys
import tensorflow as tf

expected = json.load(open(sys.argv[1]))
todo = json.load(open(sys.argv[2]))
served = tf.saved_model.load(todo.pop("_saved_model"))
total = float(tf.reduce_sum(served.predict(tf.ones([1, 256]))).numpy())
assert total == expected["_served_sum"], (total, expected["_served_sum"])
for directory, prefix in todo.items():
    path = tf.train.latest_checkpoint(directory)
    assert path is not None and os.path.basename(path) == prefix, (directory, path)
    reader = tf.train.load_checkpoint(path)
    for name, want in expected[prefix].items():
        if want["sha256"]:
            got = hashlib.sha256(reader.get_tensor(name).tobytes()).hexdigest()
            assert got == want["sha256"], (prefix, name)
print("loaded", len(todo) + 1)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "CHAOSKIT_PASSWORD": "pw", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Trainer and watcher run side by side; returns paths and what the trainer saved."""
    base = tmp_path_factory.mktemp("tf")
    repo = base / "repo"
    init_repository(repo, "pw", scrypt_n=2**12)
    ckpt_dir, journal, saved = base / "ckpts", base / "journal.jsonl", base / "saved.json"
    ckpt_dir.mkdir()
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaoskit.cli",
            "backup",
            "watch",
            "--repo",
            str(repo),
            str(ckpt_dir),
            "--journal",
            str(journal),
            "--interval",
            "0.05",
            "--max-backups",
            str(CHECKPOINTS),
            "--timeout",
            "180",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        trainer = subprocess.run(
            [
                sys.executable,
                "-c",
                TRAINER,
                str(ckpt_dir),
                str(journal),
                str(CHECKPOINTS),
                str(saved),
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert trainer.returncode == 0, trainer.stderr[-3000:]
        out, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, err
    return {
        "repo": repo,
        "ckpt_dir": ckpt_dir,
        "journal": journal,
        "out": out,
        "base": base,
        "saved": json.loads(saved.read_text()),
        "saved_path": saved,
    }


def test_agent_backs_up_every_checkpoint_as_it_completes(series: dict[str, Any]) -> None:
    repo = open_repository(series["repo"], "pw")
    snaps = repo.snapshots()
    assert [s.checkpoint_step for s in snaps] == list(range(1, CHECKPOINTS + 1))
    assert [s.summary["checkpoint"] for s in snaps] == [
        f"ckpt-{k}" for k in range(1, CHECKPOINTS + 1)
    ]
    state = read_checkpoint_state(series["ckpt_dir"])
    assert state is not None and snaps[-1].time == state.time  # the checkpoint's own time
    points = [e for e in read_journal(series["journal"]) if e["event"] == "backup.recovery_point"]
    assert [p["step"] for p in points] == list(range(1, CHECKPOINTS + 1))
    for point in points:  # backed up within seconds of being written: RPO ~ one interval
        assert 0 <= point["wall"] - point["wall_created"] < 30
    assert series["out"].count("snapshot ") == CHECKPOINTS
    for snap in snaps:
        names = sorted(f.path for f in snap.files)
        prefix = snap.summary["checkpoint"]
        assert names == ["checkpoint", f"{prefix}.data-00000-of-00001", f"{prefix}.index"]


def test_bundle_reader_agrees_with_tensorflow(series: dict[str, Any]) -> None:
    for prefix, tensors in series["saved"].items():
        if prefix.startswith("_"):
            continue
        index = read_bundle_index(series["ckpt_dir"] / f"{prefix}.index")
        assert {e.name: list(e.shape) for e in index.entries} == {
            name: t["shape"] for name, t in tensors.items()
        }


def test_only_changed_tensors_are_stored(series: dict[str, Any]) -> None:
    snaps = open_repository(series["repo"], "pw").snapshots()
    new = [s.summary["new_bytes"] for s in snaps]
    small = 2048  # the state file, step/save counter, object graph
    assert new[0] > 3 * LAYER_BYTES
    for k in (1, 3):  # only the head changed
        assert HEAD_BYTES <= new[k] <= HEAD_BYTES + small, new
    assert HEAD_BYTES + LAYER_BYTES <= new[2] <= HEAD_BYTES + LAYER_BYTES + small, new


def test_restored_checkpoints_load_in_tensorflow(series: dict[str, Any]) -> None:
    repo = open_repository(series["repo"], "pw")
    base: Path = series["base"]
    expect = {}
    for snap in repo.snapshots():
        target = base / "restored" / snap.short_id
        repo.restore(snap.id, target)
        expect[str(target)] = snap.summary["checkpoint"]
    # the newest restore also repairs a damaged live checkpoint directory in place
    live = series["ckpt_dir"]
    data = live / f"ckpt-{CHECKPOINTS}.data-00000-of-00001"
    with open(data, "r+b") as f:
        f.seek(100)
        f.write(b"\xde\xad")
    assert list(repo.verify(live, "latest").changed) == [data.name]
    repo.restore("latest", live)
    assert repo.verify(live, "latest").ok
    expect[str(live)] = f"ckpt-{CHECKPOINTS}"
    # a SavedModel version directory: tensor-aware chunks, model name and version
    served = base / "served" / "mnist" / "1"
    snap = repo.backup(served)
    assert snap.model_name == "mnist" and snap.model_version == "1"
    assert snap.summary["bundle_files"] == 1  # variables/variables.data-00000-of-00001
    repo.restore(snap.id, base / "restored-served" / "mnist" / "1")
    expect["_saved_model"] = str(base / "restored-served" / "mnist" / "1")
    (base / "expect.json").write_text(json.dumps(expect))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(series["saved_path"]), str(base / "expect.json")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"loaded {len(expect)}", time.monotonic() - started
