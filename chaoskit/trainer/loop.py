"""The reference trainer: trains the reference model forever, checkpointing and exporting.

It is the *producer* side of the serving stack chaos experiments attack: checkpoints
(``tf.train.CheckpointManager``, numbered by global step) are what RPO is measured
against, exported versions (``base_path/<step>/``) are what the model servers load.
The global step lives in the checkpoint, and the training data is a pure function of
the step, so a trainer killed and restarted resumes exactly where its checkpoint was.
Everything it writes carries a producer manifest (:mod:`chaoskit.dr.protect.manifest`), so the
store guard can tell damage that lands before its first backup from what was written.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit import model as ref
from chaoskit.atomic import atomic_write_text, fsync_dir
from chaoskit.dr.protect.checkpoints import bundle_files
from chaoskit.dr.protect.manifest import remove_unlisted, write_checkpoint_manifest
from chaoskit.errors import ChaosKitError
from chaoskit.journal import Journal

CHECKPOINT_NAME = "ckpt"


class CheckpointLoadError(ChaosKitError, RuntimeError):
    """The newest checkpoint exists but cannot be restored; training must not restart
    from scratch over it (that would silently throw away the recovery point)."""

    def __init__(self, path: str, error: BaseException | str) -> None:
        self.path = path
        if isinstance(error, BaseException):
            self.error_type = type(error).__name__
        else:
            self.error_type = "CheckpointStateError"
        lines = str(error).strip().splitlines()
        self.error = lines[0] if lines else repr(error)
        super().__init__(f"cannot restore checkpoint {path}: {self.error_type}: {self.error}")


@dataclass(frozen=True)
class TrainerConfig:
    """Options of ``python -m chaoskit.trainer`` (see ``__main__``)."""

    model_base_path: Path
    checkpoint_dir: Path
    model_name: str = "reference"
    checkpoint_every: int = 20
    export_every: int = 100
    max_to_keep: int = 5
    step_delay: float = 0.05
    seed: int = 0
    status_file: Path | None = None
    max_steps: int | None = None
    learning_rate: float = 0.01


class Trainer:
    """Owns the model, optimizer, checkpoint manager and the status file."""

    def __init__(self, config: TrainerConfig, journal: Journal | None = None) -> None:
        self.config = config
        self.journal = journal
        self.tf = ref.import_tensorflow(threads=1)
        tf = self.tf
        import keras

        self.model = ref.build_model(config.seed)
        self.optimizer = keras.optimizers.Adam(config.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step
        )
        config.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        config.model_base_path.mkdir(parents=True, exist_ok=True)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            str(config.checkpoint_dir),
            max_to_keep=config.max_to_keep,
            checkpoint_name=CHECKPOINT_NAME,
        )
        self.exportable = ref.serving_module(self.model)
        self.last_checkpoint: dict[str, Any] | None = None
        self.last_export: dict[str, Any] | None = None
        self.last_loss: float | None = None
        self._train_step = self._make_train_step()

    def _record(self, event: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.record(event, **fields)

    def _make_train_step(self) -> Any:
        tf = self.tf
        teacher = tf.constant(ref.teacher_weights(self.config.seed), dtype=tf.float32)
        model, optimizer, step, seed = self.model, self.optimizer, self.step, self.config.seed

        @tf.function
        def train_step() -> Any:
            x, y = ref.synthetic_batch(step, seed, teacher)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            step.assign_add(1)
            return loss

        return train_step

    # -- restore -------------------------------------------------------------------

    def restore(self) -> str | None:
        """Restore the newest checkpoint; return its prefix, or None for a fresh start.

        Raises CheckpointLoadError when there are checkpoint files but the newest one
        (or the ``checkpoint`` state file that names it) cannot be read.
        """
        tf = self.tf
        latest = self.manager.latest_checkpoint
        if latest is None:
            leftovers = sorted(self.config.checkpoint_dir.glob(f"{CHECKPOINT_NAME}-*.index"))
            if leftovers:
                state = str(self.config.checkpoint_dir / "checkpoint")
                raise CheckpointLoadError(
                    state,
                    f"checkpoint state file missing or unreadable while "
                    f"{len(leftovers)} checkpoint(s) exist, newest {leftovers[-1].name}",
                )
            return None
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError, OSError, ValueError, AssertionError) as e:
            path = ref.error_file(e, latest) or latest
            raise CheckpointLoadError(path, e) from e
        try:
            wall: float | None = os.path.getmtime(f"{latest}.index")
        except OSError:
            wall = None
        self.last_checkpoint = {"step": int(self.step.numpy()), "path": latest, "wall": wall}
        return str(latest)

    # -- periodic work -------------------------------------------------------------

    def save_checkpoint(self) -> str:
        """Save, make it durable, then write its producer manifest beside it (atomically;
        the store guard waits for it before backing the checkpoint up) and delete the
        manifests of the checkpoints CheckpointManager's sweep just deleted."""
        step = int(self.step.numpy())
        directory = self.config.checkpoint_dir
        directory.mkdir(parents=True, exist_ok=True)  # a fault may delete it
        path = self.manager.save(checkpoint_number=step)
        for name in os.listdir(directory):
            if name.startswith(os.path.basename(path) + ".") or name == "checkpoint":
                fd = os.open(directory / name, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(directory)
        prefix = os.path.basename(path)
        write_checkpoint_manifest(directory, prefix, bundle_files(directory, prefix), step,
                                  producer="chaoskit-trainer")  # fmt: skip
        remove_unlisted(directory, self.manager.checkpoints)
        wall = time.time()
        self.last_checkpoint = {"step": step, "path": path, "wall": wall}
        self._record("checkpoint.saved", step=step, path=path, wall_created=wall)
        return str(path)

    def export(self) -> Path | None:
        """Export the current weights as version = global step, if that is newer than
        every version on disk (versions must strictly increase)."""
        step = int(self.step.numpy())
        existing = ref.version_dirs(self.config.model_base_path)
        if existing and max(existing) >= step:
            return None
        path = ref.export_saved_model(self.exportable, self.config.model_base_path, step, step)
        self.last_export = {"version": step, "wall": time.time()}
        self._record("model.exported", version=step, step=step, path=str(path))
        return path

    def write_status(self) -> None:
        if self.config.status_file is None:
            return
        status = {
            "step": int(self.step.numpy()),
            "pid": os.getpid(),
            "loss": self.last_loss,
            "last_checkpoint": self.last_checkpoint,
            "last_export": self.last_export,
        }
        atomic_write_text(self.config.status_file, json.dumps(status), durable=False)

    def clean_partial_exports(self) -> None:
        """Remove ``.tmp-*`` export dirs a killed trainer left behind (servers ignore
        them, but they would pile up)."""
        for entry in self.config.model_base_path.iterdir():
            if entry.name.startswith(".tmp-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    # -- main loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Train until *stop* is set (or max_steps); the current step always finishes."""
        cfg = self.config
        resumed_from = self.restore()
        start = int(self.step.numpy())
        self._record("trainer.started", step=start, resumed_from=resumed_from)
        self.clean_partial_exports()
        if not ref.version_dirs(cfg.model_base_path) and not stop.is_set():
            self.export()  # serving gets something to load within seconds
        self.write_status()
        while not stop.is_set():
            if cfg.max_steps is not None and int(self.step.numpy()) >= cfg.max_steps:
                break
            self.last_loss = float(self._train_step().numpy())
            step = int(self.step.numpy())
            if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if cfg.export_every > 0 and step % cfg.export_every == 0:
                self.export()
            self.write_status()
            if cfg.step_delay > 0:
                stop.wait(cfg.step_delay)
        self.write_status()
        return 0
