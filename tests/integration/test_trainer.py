"""The reference trainer as a real process: exports, checkpoints, exact resume, refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.journal import JOURNAL_ENV, read_journal
from chaoskit.model import CANARY_INPUTS, load_canary, version_dirs
from chaoskit.waiting import wait_until

pytestmark = pytest.mark.integration


class Trainers:
    """Starts trainer processes; every one is SIGKILLed and reaped at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, name: str, *extra: str, delay: float = 0.0) -> subprocess.Popen[str]:
        d = self.root / name
        cmd = [
            sys.executable, "-m", "chaoskit.trainer",
            "--model-base-path", str(d / "models"),
            "--checkpoint-dir", str(d / "ckpt"),
            "--status-file", str(d / "status.json"),
            "--step-delay", str(delay),
            *extra,
        ]  # fmt: skip
        env = {**os.environ, JOURNAL_ENV: str(d / "journal.jsonl"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode is not None


@pytest.fixture
def trainers(tmp_path: Path) -> Iterator[Trainers]:
    t = Trainers(tmp_path)
    yield t
    t.kill_all()


def status(d: Path) -> dict:
    try:
        return json.loads((d / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def events(d: Path, name: str) -> list[dict]:
    path = d / "journal.jsonl"
    return [e for e in read_journal(path) if e["event"] == name] if path.exists() else []


def latest_checkpoint_step(ckpt_dir: Path) -> int:
    """The step named by TF's ``checkpoint`` state file (read without TensorFlow)."""
    text = (ckpt_dir / "checkpoint").read_text()
    match = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', text, re.M)
    assert match, text
    return int(match.group(1))


def flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def assert_complete_versions(base: Path) -> None:
    for version, path in version_dirs(base).items():
        assert (path / "saved_model.pb").is_file(), path
        assert list((path / "variables").glob("variables.data-*")), path
        canary = load_canary(path)
        assert canary["version"] == version and canary["inputs"] == CANARY_INPUTS
        assert len(canary["outputs"]) == len(CANARY_INPUTS)
        assert all(len(row) == 4 for row in canary["outputs"])


def test_trainer_checkpoints_exports_and_resumes_exactly_after_sigkill(trainers, tmp_path):
    ref = tmp_path / "ref"
    victim = tmp_path / "victim"
    # The reference run goes straight to step 40; the victim is SIGKILLed between its
    # checkpoint at 20 and step 40, then restarted.  Same seed, data a pure function of
    # the step: version 40 of both must compute the same outputs.
    straight = trainers.start(
        "ref", "--checkpoint-every", "20", "--export-every", "40", "--max-steps", "40"
    )
    first = trainers.start("victim", "--checkpoint-every", "20", "--export-every", "40", delay=0.1)
    wait_until(
        lambda: (status(victim).get("last_checkpoint") or {}).get("step", 0) >= 20,
        90, interval=0.01, what="victim's checkpoint at step 20",
    )  # fmt: skip
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = status(victim)["step"]
    assert 20 <= killed_at < 40, killed_at
    assert first.returncode == -signal.SIGKILL
    # Events and files of the first life.
    (started,) = events(victim, "trainer.started")
    assert started["step"] == 0 and started["resumed_from"] is None
    (exported,) = events(victim, "model.exported")
    assert exported["version"] == 0 and Path(exported["path"]) == victim / "models" / "0"
    saved = events(victim, "checkpoint.saved")
    assert [e["step"] for e in saved] == [20]
    assert saved[0]["path"].endswith("ckpt-20") and saved[0]["wall_created"] > 0
    assert latest_checkpoint_step(victim / "ckpt") == 20
    assert sorted(version_dirs(victim / "models")) == [0]
    assert_complete_versions(victim / "models")
    s = status(victim)
    assert s["pid"] == first.pid and s["last_export"]["version"] == 0
    assert s["last_checkpoint"]["step"] == 20

    # A partial export left by a crash is cleaned up; other names are left alone.
    (victim / "models" / ".tmp-30-12345").mkdir()
    second = trainers.start(
        "victim", "--checkpoint-every", "20", "--export-every", "40", "--max-steps", "40"
    )
    assert second.wait(timeout=90) == 0, second.stderr.read() if second.stderr else ""
    restarted = events(victim, "trainer.started")[-1]
    assert restarted["step"] == 20 and restarted["resumed_from"].endswith("ckpt-20")
    assert [e["step"] for e in events(victim, "checkpoint.saved")] == [20, 40]
    assert not (victim / "models" / ".tmp-30-12345").exists()
    assert straight.wait(timeout=90) == 0
    assert sorted(version_dirs(ref / "models")) == [0, 40]
    assert sorted(version_dirs(victim / "models")) == [0, 40]
    assert_complete_versions(victim / "models")
    want = load_canary(ref / "models" / "40")["outputs"]
    got = load_canary(victim / "models" / "40")["outputs"]
    assert flat(got) == pytest.approx(flat(want), abs=1e-6)
    # Training changed the weights: version 40 answers differently from version 0.
    v0 = load_canary(victim / "models" / "0")["outputs"]
    assert max(abs(a - b) for a, b in zip(flat(v0), flat(got), strict=True)) > 1e-3
    # CheckpointManager numbering is the step; the status file follows the last step.
    assert status(victim)["step"] == 40 and status(victim)["last_checkpoint"]["step"] == 40


def _start_damaged(trainers: Trainers, root: Path, name: str, source: Path) -> subprocess.Popen:
    shutil.copytree(source, root / name / "ckpt")
    return trainers.start(name)


def test_sigterm_exits_zero_and_a_damaged_checkpoint_is_refused(trainers, tmp_path):
    good = tmp_path / "good"
    proc = trainers.start("good", "--checkpoint-every", "10", delay=0.02)
    wait_until(
        lambda: (status(good).get("last_checkpoint") or {}).get("step", 0) >= 20,
        90, what="checkpoint at step 20",
    )  # fmt: skip
    proc.send_signal(signal.SIGTERM)  # finishes the current step, exits 0
    assert proc.wait(timeout=10) == 0
    ckpt = good / "ckpt"
    newest = latest_checkpoint_step(ckpt)
    assert newest >= 20 and status(good)["step"] >= newest
    data = ckpt / f"ckpt-{newest}.data-00000-of-00001"
    assert data.is_file()

    flipped = tmp_path / "flipped-src"
    shutil.copytree(ckpt, flipped)
    raw = bytearray((flipped / data.name).read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (flipped / data.name).write_bytes(bytes(raw))
    garbage = tmp_path / "garbage-src"
    shutil.copytree(ckpt, garbage)
    (garbage / "checkpoint").write_text("\x00\x01 not a checkpoint state \xff")

    flip_proc = _start_damaged(trainers, tmp_path, "flip", flipped)
    garbage_proc = _start_damaged(trainers, tmp_path, "garbage", garbage)
    _, err = flip_proc.communicate(timeout=90)
    rc = flip_proc.returncode
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaoskit-trainer: error:")
    assert str(tmp_path / "flip" / "ckpt" / data.name) in lines[0]
    (failed,) = events(tmp_path / "flip", "trainer.load_failed")
    assert failed["path"] == str(tmp_path / "flip" / "ckpt" / data.name)
    assert failed["error_type"] and "checksum" in failed["error"].lower()
    assert not (tmp_path / "flip" / "models").exists() or not version_dirs(
        tmp_path / "flip" / "models"
    )
    assert events(tmp_path / "flip", "trainer.started") == []

    _, err = garbage_proc.communicate(timeout=90)
    assert garbage_proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "garbage" / "ckpt" / "checkpoint") in lines[0]
    (failed,) = events(tmp_path / "garbage", "trainer.load_failed")
    assert failed["path"].endswith("checkpoint")


def test_export_is_all_or_nothing(tmp_path, monkeypatch):
    """In-process: a version appears whole (with its canary) or not at all."""
    from chaoskit import model as ref

    tf = ref.import_tensorflow()
    module = ref.serving_module(ref.build_model(seed=3))
    base = tmp_path / "models"
    path = ref.export_saved_model(module, base, version=5, step=5)
    assert path == base / "5" and sorted(p.name for p in base.iterdir()) == ["5"]
    assert_complete_versions(base)
    loaded = tf.saved_model.load(str(path)).signatures["serving_default"]
    got = loaded(x=tf.constant(CANARY_INPUTS))["y"].numpy().tolist()
    assert flat(got) == pytest.approx(flat(load_canary(path)["outputs"]), abs=1e-6)
    with pytest.raises(FileExistsError):
        ref.export_saved_model(module, base, version=5, step=6)

    real_save = tf.saved_model.save

    def save_then_fail(*args, **kwargs):
        real_save(*args, **kwargs)  # the files are half there when the "disk fills up"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        ref.export_saved_model(module, base, version=6, step=6)
    assert sorted(p.name for p in base.iterdir()) == ["5"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (a checkpoint volume that can fill up), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk" / "ckpt"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> int:
    """Write *path* until the file system is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC
    return written


def test_a_full_disk_fails_saves_with_events_and_training_goes_on(trainers, tmp_path, small_disk):
    d = tmp_path / "disk"
    proc = trainers.start("disk", "--checkpoint-every", "5", "--export-every", "100000",
                          delay=0.02)  # fmt: skip
    wait_until(lambda: len(events(d, "checkpoint.saved")) >= 2, 90, what="two checkpoints")
    filler = small_disk / "fill"
    assert fill(filler) > 0
    failed = wait_until(lambda: events(d, "trainer.save_failed")[2:], 60, what="three failed saves")
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    first = events(d, "trainer.save_failed")[0]
    assert first["kind"] == "checkpoint" and first["failures"] == 1
    assert "space" in first["error"].lower(), first["error"]
    assert failed[-1]["failures"] >= 3 and failed[-1]["step"] > first["step"]
    # Nothing half-written is left: every checkpoint on disk is whole and listed.
    listed_step = latest_checkpoint_step(small_disk)
    saved_steps = [e["step"] for e in events(d, "checkpoint.saved")]
    assert listed_step == saved_steps[-1] < first["step"]
    leftovers = [p.name for p in small_disk.iterdir()
                 if "_temp" in p.name or p.name.startswith(f"ckpt-{first['step']}.")]  # fmt: skip
    assert leftovers == []
    # The disk gets space again: saves resume, and a restart resumes from the newest.
    filler.unlink()
    resumed = wait_until(lambda: events(d, "trainer.save_resumed"), 60, what="saves resuming")
    assert resumed[0]["kind"] == "checkpoint" and resumed[0]["failures"] >= 3
    wait_until(lambda: events(d, "checkpoint.saved")[len(saved_steps):], 30, what="a new save")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    newest = latest_checkpoint_step(small_disk)
    assert newest > first["step"]
    again = trainers.start("disk", "--checkpoint-every", "5", "--max-steps", str(newest))
    assert again.wait(timeout=90) == 0, again.stderr.read() if again.stderr else ""
    assert events(d, "trainer.started")[-1]["resumed_from"].endswith(f"ckpt-{newest}")


def held_out_error(version_dir: Path) -> float:
    """Mean squared error of an exported version on the reference held-out set."""
    import numpy as np

    from chaoskit.dr.online.quality import reference_labelled_set
    from chaoskit.model import import_tensorflow

    tf = import_tensorflow()
    labelled = reference_labelled_set(1000)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    outputs = serve(x=tf.constant(labelled.instances, dtype=tf.float32))["y"].numpy()
    return float(np.mean((outputs - labelled.expected) ** 2))


def test_poisoned_labels_train_a_worse_version(trainers, tmp_path):
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"labels": "flip", "fault": "poison-training"}))
    args = ("--checkpoint-every", "0", "--export-every", "300", "--max-steps", "300")
    clean = trainers.start("clean", *args)
    poisoned = trainers.start("poisoned", *args, "--control-file", str(control))
    for proc in (clean, poisoned):
        assert proc.wait(timeout=180) == 0, proc.stderr.read() if proc.stderr else ""
    (applied,) = events(tmp_path / "poisoned", "trainer.control")
    assert applied["step"] == 0 and applied["labels"] == "flip"
    assert applied["fault"] == "poison-training" and applied["learning_rate"] == pytest.approx(0.01)
    assert events(tmp_path / "clean", "trainer.control") == []
    good = held_out_error(tmp_path / "clean" / "models" / "300")
    bad = held_out_error(tmp_path / "poisoned" / "models" / "300")
    assert bad > 5 * good, (good, bad)


def test_a_diverging_rate_ends_in_non_finite_weights_and_its_revert_restores_the_rate(
    trainers, tmp_path
):
    import math

    control = tmp_path / "control.json"
    proc = trainers.start("diverge", "--checkpoint-every", "0", "--export-every", "0",
                          "--control-file", str(control), delay=0.02)  # fmt: skip
    d = tmp_path / "diverge"
    wait_until(lambda: status(d).get("step", 0) >= 5, 90, what="training under way")
    control.write_text(json.dumps({"learning_rate": 1e30, "fault": "diverge-training"}))
    applied = wait_until(lambda: events(d, "trainer.control"), 30, what="the control applied")
    assert applied[0]["learning_rate"] == pytest.approx(1e30)
    wait_until(lambda: not math.isfinite(status(d).get("loss") or 0.0), 30, what="divergence")
    control.unlink()
    restored = wait_until(lambda: events(d, "trainer.control")[1:], 30, what="the revert")
    assert restored[0]["labels"] == "none" and restored[0]["learning_rate"] == pytest.approx(0.01)
    assert restored[0]["fault"] is None
    control.write_text("{")
    refused = wait_until(lambda: events(d, "trainer.control_refused"), 30, what="a refusal")
    assert "trainer control file" in refused[0]["error"]
    assert proc.poll() is None
