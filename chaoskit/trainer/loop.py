"""The reference trainer: trains the reference model forever, checkpointing and exporting.

It is the *producer* side of the serving stack chaos experiments attack: checkpoints
(``tf.train.CheckpointManager``, numbered by global step) are what RPO is measured
against, exported versions (``base_path/<step>/``) are what the model servers load.
The global step lives in the checkpoint, and the training data is a pure function of
the step, so a trainer killed and restarted resumes exactly where its checkpoint was.
Everything it writes carries a producer manifest (:mod:`chaoskit.dr.protect.manifest`), so the
store guard can tell damage that lands before its first backup from what was written.
A save that fails (a full disk, a directory gone) is journaled as ``trainer.save_failed``
and tried again at the next interval: training goes on, and what it leaves on disk is
either a whole checkpoint or nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit import model as ref
from chaoskit.atomic import atomic_write_text, fsync_dir
from chaoskit.dr.protect.checkpoints import bundle_files
from chaoskit.dr.protect.manifest import remove_unlisted, write_checkpoint_manifest
from chaoskit.errors import ChaosKitError, ConfigError
from chaoskit.journal import Journal
from chaoskit.trainer.control import LABEL_MODES, ControlWatch

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
    control_file: Path | None = None
    """A training fault's instructions (see :mod:`chaoskit.trainer.control`)."""


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
        self.label_mode = tf.Variable(0, dtype=tf.int32, trainable=False, name="label_mode")
        """0 as configured, 1 targets negated, 2 shuffled (a training fault; not saved)."""
        self._control = None if config.control_file is None else ControlWatch(config.control_file)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step
        )
        config.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        config.model_base_path.mkdir(parents=True, exist_ok=True)
        self.manager = self._read_manager()
        self.exportable = ref.serving_module(self.model)
        self._variants: dict[tuple[int, float], Any] = {}
        """Serving modules a fault asked for, by (repeat, input scale), each traced once."""
        self.variant = (1, 1.0)
        """What the next exports run: the model *repeat* times, on inputs times *scale*."""
        self.last_checkpoint: dict[str, Any] | None = None
        self.last_export: dict[str, Any] | None = None
        self.last_loss: float | None = None
        self.failed_saves: dict[str, int] = {}
        """Consecutive failed saves per kind ("checkpoint", "export"), until one succeeds."""
        self._unlisted: tuple[str, int] | None = None
        """A saved checkpoint whose producer manifest could not be written yet."""
        self._status_failing = False
        self._train_step = self._make_train_step()

    def _read_manager(self) -> Any:
        """A CheckpointManager that knows the checkpoints the state file on disk lists."""
        return self.tf.train.CheckpointManager(
            self.checkpoint,
            str(self.config.checkpoint_dir),
            max_to_keep=self.config.max_to_keep,
            checkpoint_name=CHECKPOINT_NAME,
        )

    def _record(self, event: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.record(event, **fields)

    def _make_train_step(self) -> Any:
        tf = self.tf
        teacher = tf.constant(ref.teacher_weights(self.config.seed), dtype=tf.float32)
        model, optimizer, step, seed = self.model, self.optimizer, self.step, self.config.seed
        mode = self.label_mode

        @tf.function
        def train_step() -> Any:
            x, y = ref.synthetic_batch(step, seed, teacher)
            order = tf.argsort(tf.random.stateless_uniform(
                [ref.BATCH_SIZE], seed=tf.stack([seed + 1, tf.cast(step, tf.int64)])))  # fmt: skip
            y = tf.where(mode == 1, -y, tf.where(mode == 2, tf.gather(y, order), y))
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
        # the optimizer saves its rate: one a training fault set must not come back with it
        self.optimizer.learning_rate.assign(self.config.learning_rate)
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
        if self._unlisted is not None:  # still listed: its manifest is owed; swept: not
            pending, pending_step = self._unlisted
            self._unlisted = None
            if self._listed(pending):
                self._write_manifest(pending, pending_step)
        prefix = f"{CHECKPOINT_NAME}-{step}"
        try:
            path = self.manager.save(checkpoint_number=step)
            for name in os.listdir(directory):
                if name.startswith(prefix + ".") or name == "checkpoint":
                    fd = os.open(directory / name, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            fsync_dir(directory)
        except (OSError, self.tf.errors.OpError):
            self._forget_failed_save(prefix)
            raise
        self._write_manifest(prefix, step)
        remove_unlisted(directory, self.manager.checkpoints)
        wall = time.time()
        self.last_checkpoint = {"step": step, "path": path, "wall": wall}
        self._record("checkpoint.saved", step=step, path=path, wall_created=wall)
        return str(path)

    def _listed(self, prefix: str) -> bool:
        """Whether the checkpoint manager lists the checkpoint *prefix*."""
        return any(os.path.basename(p) == prefix for p in self.manager.checkpoints)

    def _write_manifest(self, prefix: str, step: int) -> None:
        """The producer manifest of a saved checkpoint; kept pending while it fails."""
        directory = self.config.checkpoint_dir
        self._unlisted = (prefix, step)
        write_checkpoint_manifest(directory, prefix, bundle_files(directory, prefix), step,
                                  producer="chaoskit-trainer")  # fmt: skip
        self._unlisted = None

    def _forget_failed_save(self, prefix: str) -> None:
        """After a failed save, believe the disk: a manager read afresh from the state
        file, and the files of *prefix* it does not list (half-written shards, TF's
        ``_temp`` directory) deleted, so no half checkpoint is left for a restart or the
        store guard, and a full disk gets its space back."""
        self.manager = self._read_manager()
        if self._listed(prefix):
            return  # whole and listed: only what came after the save failed
        directory = self.config.checkpoint_dir
        for name in os.listdir(directory):
            if name.startswith((prefix + ".", prefix + "_temp")):
                path = directory / name
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def export(self) -> Path | None:
        """Export the current weights as version = global step, if that is newer than
        every version on disk (versions must strictly increase)."""
        step = int(self.step.numpy())
        existing = ref.version_dirs(self.config.model_base_path)
        if existing and max(existing) >= step:
            return None
        module = self.exportable
        if self.variant != (1, 1.0):
            if self.variant not in self._variants:
                repeat, scale = self.variant
                self._variants[self.variant] = ref.serving_module(
                    self.model, repeat=repeat, input_scale=scale
                )
            module = self._variants[self.variant]
        path = ref.export_saved_model(module, self.config.model_base_path, step, step)
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
        try:
            atomic_write_text(self.config.status_file, json.dumps(status), durable=False)
        except OSError as e:
            if not self._status_failing:
                self._record("trainer.status_failed", path=str(self.config.status_file),
                             error=_error_text(e))  # fmt: skip
            self._status_failing = True
            return
        self._status_failing = False

    def clean_partial_exports(self) -> None:
        """Remove ``.tmp-*`` export dirs a killed trainer left behind (servers ignore
        them, but they would pile up, and on a full disk they hold its space)."""
        try:
            entries = list(self.config.model_base_path.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".tmp-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def apply_control(self) -> None:
        """Follow the control file when it changed: ``trainer.control`` with what is now
        in force, or ``trainer.control_refused`` (the previous control stays)."""
        if self._control is None:
            return
        try:
            control = self._control.changed()
        except ConfigError as e:
            self._record("trainer.control_refused", error=str(e))
            return
        if control is None:
            return
        self.label_mode.assign(LABEL_MODES.index(control.labels))
        self.optimizer.learning_rate.assign(control.learning_rate or self.config.learning_rate)
        self.variant = (control.slow_repeat or 1, control.input_scale or 1.0)
        self._record("trainer.control", step=int(self.step.numpy()), labels=control.labels,
                     learning_rate=float(self.optimizer.learning_rate.numpy()),
                     slow_repeat=control.slow_repeat, input_scale=control.input_scale,
                     fault=control.fault)  # fmt: skip

    def attempt_save(self, kind: str, save: Callable[[], Any]) -> Any:
        """*save* (a checkpoint or an export); its failure is ``trainer.save_failed``
        with the error, and the first success after failures ``trainer.save_resumed``,
        so the DR engine sees saves failing (and RPO growing) instead of a trainer that
        died with a traceback and no event."""
        try:
            result = save()
        except (OSError, self.tf.errors.OpError) as e:
            self.failed_saves[kind] = self.failed_saves.get(kind, 0) + 1
            self._record("trainer.save_failed", kind=kind, step=int(self.step.numpy()),
                         error=_error_text(e), failures=self.failed_saves[kind])  # fmt: skip
            if kind == "export":
                self.clean_partial_exports()
            return None
        failures = self.failed_saves.pop(kind, 0)
        if failures:
            self._record("trainer.save_resumed", kind=kind, step=int(self.step.numpy()),
                         failures=failures)  # fmt: skip
        return result

    # -- main loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Train until *stop* is set (or max_steps); the current step always finishes."""
        cfg = self.config
        resumed_from = self.restore()
        start = int(self.step.numpy())
        self._record("trainer.started", step=start, resumed_from=resumed_from)
        self.clean_partial_exports()
        if not ref.version_dirs(cfg.model_base_path) and not stop.is_set():
            self.attempt_save("export", self.export)  # serving gets a version within seconds
        self.write_status()
        while not stop.is_set():
            if cfg.max_steps is not None and int(self.step.numpy()) >= cfg.max_steps:
                break
            self.apply_control()
            self.last_loss = float(self._train_step().numpy())
            step = int(self.step.numpy())
            if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0:
                self.attempt_save("checkpoint", self.save_checkpoint)
            if cfg.export_every > 0 and step % cfg.export_every == 0:
                self.attempt_save("export", self.export)
            self.write_status()
            if cfg.step_delay > 0:
                stop.wait(cfg.step_delay)
        self.write_status()
        return 0


def _error_text(error: BaseException) -> str:
    """``Type: first line`` of an OSError or a TensorFlow error (whose text is long)."""
    text = getattr(error, "message", None) or str(error)
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else text}"
