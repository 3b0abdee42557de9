"""The reference model of chaoskit's serving stack and its on-disk formats.

A tiny regression network (input float32 [batch, 8] -> Dense "body" (32, relu) ->
Dense "head" (4)) trained on data from a fixed random teacher, so loss falls and the
weights change at every step.  Exports follow TF Serving's layout
(``base_path/<int version>/``) and carry a *canary*: fixed inputs and the outputs the
exported signature itself produced, so a monitor can prove that what is served is what
was exported.  TensorFlow is imported inside functions only: reading a canary (the
monitor does it on every probe) must not cost the ~3 s TF import.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "x"
OUTPUT_NAME = "y"
INPUT_DIM = 8
HIDDEN_DIM = 32
OUTPUT_DIM = 4
CANARY_TOLERANCE = 1e-4
CANARY_DIR = "assets.extra"
CANARY_NAME = "chaoskit_canary.json"
BATCH_SIZE = 64

CANARY_INPUTS: list[list[float]] = [
    [0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 0.0, -2.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [-0.3, 0.8, -1.2, 0.4, 1.7, -0.6, 0.9, 0.1],
    [2.5, 0.0, -0.5, -1.5, 0.3, 0.7, -2.2, 1.1],
]
"""Four fixed rows of 8 floats; the canary request every monitor can send."""

_VERSION_TMP_PREFIX = ".tmp-"


class _Refused:
    """Loader of a module kept out of the process: importing it raises ImportError."""

    def create_module(self, spec: Any) -> Any:
        raise ImportError(f"{spec.name} is kept out of this process by chaoskit")

    def exec_module(self, module: Any) -> None:  # pragma: no cover - create_module raised
        raise ImportError(f"{module.__name__} is kept out of this process by chaoskit")


class _KeepOut:
    """Meta-path finder for packages TF imports eagerly "just in case" and a model server
    never uses: Keras (~1 s, TF's ``__init__`` tolerates its absence) and scikit-learn
    (~0.8 s, pulled in by Keras' sklearn wrapper).  The spec keeps the real origin so
    TF's ``find_spec``-based path lookups still work; only executing the module fails."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.partition(".")[0] not in self.names:
            return None
        from importlib.machinery import ModuleSpec, PathFinder

        real = PathFinder.find_spec(name, path)
        return ModuleSpec(name, _Refused(), origin=real.origin if real else None)  # type: ignore[arg-type]


GPU_NOTICES = ("before absl::InitializeLog() is called", "cudart_stub.cc", "cuda_platform.cc",
               "cuda_executor.cc", "failed call to cuInit", "cpu_feature_guard.cc",
               "This TensorFlow binary is optimized", "To enable the following instructions")
"""What the tensorflow package (GPU build) says on every machine without CUDA."""


@contextlib.contextmanager
def _without_gpu_notices(active: bool = True) -> Iterator[None]:
    """Capture file descriptor 2 meanwhile and give back every line but the notices.

    TensorFlow's C++ side looks for CUDA when imported and when it first lists devices,
    and logs that there is none straight to fd 2, before its log level applies: on
    every CPU machine a user error's one line would become six.
    """
    if not active:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not any(notice in line for notice in GPU_NOTICES):
                    sys.stderr.write(line)
            sys.stderr.flush()


def import_tensorflow(threads: int | None = 1, *, lean: bool = False) -> Any:
    """Import TensorFlow quietly and cheaply, with *threads* intra/inter-op threads
    (None: TensorFlow's own choice).

    Sets TF_CPP_MIN_LOG_LEVEL=2 and TF_ENABLE_ONEDNN_OPTS=0 (unless already set) before
    the import, keeps scikit-learn out of the process and, with *lean* (the model server,
    whose cold start is what RTO is measured against), Keras too; silences absl INFO.
    """

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    fresh = "tensorflow" not in sys.modules
    names = {"sklearn", "keras"} if lean else {"sklearn"}
    keep_out = _KeepOut(frozenset(names - set(sys.modules)))
    if fresh:
        sys.meta_path.insert(0, keep_out)  # type: ignore[arg-type]
    try:
        with _without_gpu_notices(fresh):
            import tensorflow as tf

            if fresh and threads is not None:
                try:
                    tf.config.threading.set_intra_op_parallelism_threads(threads)
                    tf.config.threading.set_inter_op_parallelism_threads(threads)
                except RuntimeError:  # the runtime was already initialised by an earlier user
                    pass
            if fresh:
                tf.config.list_physical_devices("GPU")  # where it looks for CUDA, and says so
    finally:
        if fresh:
            sys.meta_path.remove(keep_out)  # type: ignore[arg-type]
    if fresh:
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:  # pragma: no cover
            pass
        tf.get_logger().setLevel("ERROR")
    return tf


def canary_file(version_dir: str | os.PathLike[str]) -> Path:
    """Where an exported version keeps its canary (ignored by TF itself)."""
    return Path(version_dir) / CANARY_DIR / CANARY_NAME


def load_canary(version_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The canary of one exported version, without importing TensorFlow."""
    with open(canary_file(version_dir), encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "inputs" not in data or "outputs" not in data:
        raise ValueError(f"{canary_file(version_dir)} is not a chaoskit canary")
    return data


def version_dirs(base_path: str | os.PathLike[str]) -> dict[int, Path]:
    """Integer-named subdirectories of a model base path (TF Serving ignores the rest)."""
    found: dict[int, Path] = {}
    try:
        entries = list(os.scandir(base_path))
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir(follow_symlinks=True):
            found[int(entry.name)] = Path(entry.path)
    return found


def build_model(seed: int = 0) -> Any:
    """A fresh, seeded Keras model with layers "body" and "head"."""
    import_tensorflow()
    import keras

    return keras.Sequential(
        [
            keras.Input((INPUT_DIM,), dtype="float32", name=INPUT_NAME),
            keras.layers.Dense(
                HIDDEN_DIM,
                activation="relu",
                name="body",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            ),
            keras.layers.Dense(
                OUTPUT_DIM,
                name="head",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
            ),
        ],
        name="reference",
    )


def teacher_weights(seed: int = 0) -> list[list[float]]:
    """The fixed random teacher [8, 4] the synthetic targets come from (pure Python)."""
    import random

    rng = random.Random(10_007 + seed)
    return [[rng.gauss(0.0, 1.0) for _ in range(OUTPUT_DIM)] for _ in range(INPUT_DIM)]


def synthetic_batch(step: Any, seed: int = 0, teacher: Any = None) -> tuple[tf.Tensor, tf.Tensor]:
    """The training batch of one step: a pure function of (seed, step), so resuming at a
    checkpointed step replays exactly the data an uninterrupted run would have seen."""
    import tensorflow as tf

    if teacher is None:
        teacher = tf.constant(teacher_weights(seed), dtype=tf.float32)
    step64 = tf.cast(step, tf.int64)
    x = tf.random.stateless_normal([BATCH_SIZE, INPUT_DIM], seed=tf.stack([seed, step64]))
    y = tf.tanh(tf.matmul(x, teacher)) * 2.0 + 0.1 * tf.sin(3.0 * x[:, :OUTPUT_DIM])
    return x, y


def serving_module(model: Any, *, repeat: int = 1, input_scale: float = 1.0) -> Any:
    """Wrap a Keras model with the serving signature (a wrapped one passes through).

    Build it once and export it many times: tracing the signature costs ~0.2 s.
    *repeat* > 1 makes a slow version (a slow-model fault): the signature runs the model
    that many times, each run depending on the last so nothing can skip them, and
    answers what one run answers.  *input_scale* != 1 makes a skewed version (a
    preprocessing-skew fault): the signature scales its inputs before the model sees them.
    """
    tf = import_tensorflow()

    if hasattr(model, "serve") and not hasattr(model, "layers"):
        return model

    module_base: Any = tf.Module

    class ServingModule(module_base):
        def __init__(self, inner: Any) -> None:
            super().__init__(name="chaoskit_reference")
            self.model = inner

        @tf.function(
            input_signature=[tf.TensorSpec([None, INPUT_DIM], tf.float32, name=INPUT_NAME)]
        )
        def serve(self, x: Any) -> dict[str, Any]:
            if input_scale != 1.0:
                x = x * input_scale
            y = self.model(x)
            if repeat > 1:

                def again(i: Any, y: Any) -> tuple[Any, Any]:
                    # x + 0 * sum(y): the same input, but only once the last run ended
                    return i + 1, self.model(x + 0.0 * tf.reduce_sum(y))

                _, y = tf.while_loop(lambda i, _: i < repeat, again, (tf.constant(1), y))
            return {OUTPUT_NAME: y}

    return ServingModule(model)


def _fsync_tree(root: Path) -> None:
    from chaoskit.atomic import fsync_dir

    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def export_saved_model(
    module_or_model: Any,
    base_path: str | os.PathLike[str],
    version: int,
    step: int,
) -> Path:
    """Export one version atomically to ``base_path/<version>/`` and return that path.

    Everything (SavedModel + canary + the producer manifest of every file, see
    :mod:`chaoskit.dr.protect.manifest`) is written to ``base_path/.tmp-<version>-<pid>/``,
    fsynced, then renamed into place, so a polling server never sees half a version.
    The canary outputs come from the signature reloaded from the written files, i.e.
    exactly what a server will compute.
    """
    import shutil

    from chaoskit.atomic import atomic_write_text, fsync_dir
    from chaoskit.dr.protect.manifest import write_version_manifest

    tf = import_tensorflow()
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    final = base / str(int(version))
    if final.exists():
        raise FileExistsError(f"model version {final} already exists")
    tmp = base / f"{_VERSION_TMP_PREFIX}{int(version)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        module = serving_module(module_or_model)
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: module.serve})
        loaded = tf.saved_model.load(str(tmp))
        outputs = loaded.signatures[SIGNATURE_NAME](
            **{INPUT_NAME: tf.constant(CANARY_INPUTS, dtype=tf.float32)}
        )[OUTPUT_NAME].numpy()
        canary = {
            "inputs": CANARY_INPUTS,
            "outputs": [[float(v) for v in row] for row in outputs],
            "step": int(step),
            "version": int(version),
            "signature_name": SIGNATURE_NAME,
            "tolerance": CANARY_TOLERANCE,
        }
        canary_file(tmp).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(canary_file(tmp), json.dumps(canary, indent=1), durable=False)
        write_version_manifest(tmp, int(version), int(step),
                               canary=f"{CANARY_DIR}/{CANARY_NAME}")  # fmt: skip
        _fsync_tree(tmp)
        os.rename(tmp, final)
        fsync_dir(base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


_PATH_IN_MESSAGE = re.compile(r"(/[^\s'\"`:,;()\[\]{}]+)")
_BUNDLE_FILE = re.compile(r"\.(index|pb|data-\d+-of-\d+)$")
_SHARD = re.compile(r"shard (\d+)")


def _files_of_prefix(prefix: Path, message: str) -> str | None:
    """The ``.index`` or ``.data`` file of a TensorBundle prefix that *message* is about."""
    lowered = message.lower()
    if ".index" in lowered or "magic" in lowered or "block checksum" in lowered:
        index = prefix.with_name(prefix.name + ".index")
        if index.exists():
            return str(index)
    shard = _SHARD.search(message)
    pattern = (
        f"{prefix.name}.data-{int(shard.group(1)):05d}-of-*" if shard else (f"{prefix.name}.data-*")
    )
    hits = sorted(prefix.parent.glob(pattern))
    return str(hits[0]) if hits else None


def error_file(error: BaseException, root: str | os.PathLike[str]) -> str | None:
    """The file a TF load/restore error is about, when it can be told.

    *root* is a SavedModel directory or a checkpoint prefix.  TF names a file in some
    messages ("No such file or directory", ``.index`` errors), only the bundle prefix in
    others ("variables/variables shard 0: Checksum does not match") and nothing at all in
    some (a truncated ``.data`` raises a bare IndexError); then the file is inferred
    from the kind of error and what exists under *root*.
    """
    message = str(error)
    for candidate in _PATH_IN_MESSAGE.findall(message):
        path = Path(candidate.rstrip("."))
        if path.is_file() or not path.exists() and _BUNDLE_FILE.search(path.name):
            return str(path)
        if not path.exists() and list(path.parent.glob(path.name + ".*")):
            found = _files_of_prefix(path, message)
            if found:
                return found
    root_path = Path(root)
    if root_path.is_dir():
        lowered = message.lower()
        if "wire format" in lowered or "saved_model.pb" in lowered:
            return str(root_path / "saved_model.pb")
        return _files_of_prefix(root_path / "variables" / "variables", message)
    return _files_of_prefix(root_path, message)
