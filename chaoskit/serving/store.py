"""Version polling and loading for the model server, with TF Serving's version policies.

Every poll lists ``base_path/<int>/`` and loads the versions the policy selects
(``latest`` N, default 1; ``all``; ``specific``) before it unloads the ones no longer
selected, so a switch never leaves a gap; a load is complete only after the canary
inputs ran through it (and matched the canary outputs stored with the version), so a
switch never exposes a version that cannot answer.  Version labels (from the model
config, see ``config.py``) only name loaded versions.  Choices, where TF Serving
leaves room:

* a version that fails to load is reported as END with DATA_LOSS/UNKNOWN and is not
  retried until something in its directory changes (size or mtime of any file);
* if the newest version fails, the next older one newer than the served one is tried
  (TF Serving would keep aspiring to the newest only) -- at a cold start after a bad
  export this keeps the model available;
* the served version stays in memory when its directory disappears from disk and
  is unloaded only when a newer version has loaded (``all``/``specific``: when another
  selected version serves);
* a policy whose selection has nothing that loads (``specific`` naming only versions
  that do not exist or fail) leaves the loaded versions serving; the named versions
  missing from disk are reported once (log and ``serving.version_not_found``), as TF
  Serving logs them, and serving the rest of the selection goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chaoskit import model as ref
from chaoskit.journal import Journal
from chaoskit.serving.config import ServingConfig, VersionPolicy
from chaoskit.serving.tensors import InputSpec

log = logging.getLogger(__name__)

Fingerprint = tuple[Any, ...]


@dataclass(frozen=True)
class Signature:
    """A callable signature of a loaded version."""

    name: str
    function: Any
    inputs: dict[str, InputSpec]
    outputs: tuple[str, ...]

    def __call__(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        args = {
            name: tf.constant(array, dtype=tf.as_dtype(self.inputs[name].dtype))
            if array.dtype != object
            else tf.constant(array.tolist(), dtype=tf.string)
            for name, array in tensors.items()
        }
        result = self.function(**args)
        return {name: value.numpy() for name, value in result.items()}


@dataclass
class Servable:
    """One loaded version: the SavedModel object (kept alive), signatures, metadata."""

    version: int
    path: Path
    loaded: Any
    signatures: dict[str, Signature]
    signature_def: dict[str, Any]


@dataclass
class VersionState:
    """What the status endpoint reports about one version."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""
    fingerprint: Fingerprint | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


class LoadError(Exception):
    """A version could not be loaded; carries what the status and journal report."""

    def __init__(self, code: str, error_type: str, message: str, file: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.error_type = error_type
        self.message = message
        self.file = file


def fingerprint(path: Path) -> Fingerprint:
    """Cheap change detector for a version directory: every file's size and mtime."""
    entries: list[tuple[str, int, int]] = []
    try:
        entries.append(("", 0, path.stat().st_mtime_ns))
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    except FileNotFoundError:
        pass
    return tuple(entries)


def signature_def_json(path: Path) -> dict[str, Any]:
    """The SignatureDefs of ``saved_model.pb`` as TF Serving's metadata JSON shows them."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    defs = proto.meta_graphs[0].signature_def if proto.meta_graphs else {}

    def tensor_info(info: Any) -> dict[str, Any]:
        shape = info.tensor_shape
        return {
            "dtype": types_pb2.DataType.Name(info.dtype),
            "tensor_shape": {
                "dim": [{"size": str(d.size), "name": d.name} for d in shape.dim],
                "unknown_rank": bool(shape.unknown_rank),
            },
            "name": info.name,
        }

    return {
        key: {
            "inputs": {k: tensor_info(v) for k, v in sorted(sig.inputs.items())},
            "outputs": {k: tensor_info(v) for k, v in sorted(sig.outputs.items())},
            "method_name": sig.method_name,
            "defaults": {},
        }
        for key, sig in sorted(defs.items())
    }


def _classify(error: BaseException) -> str:
    import tensorflow as tf

    text = str(error).lower()
    if isinstance(error, (tf.errors.DataLossError, IndexError)) or any(
        hint in text for hint in ("checksum", "corrupt", "read less bytes", "magic", "cannot parse")
    ):
        return "DATA_LOSS"
    return "UNKNOWN"


def load_version(version: int, path: Path) -> Servable:
    """Load one SavedModel version and prove it answers (the canary, when present)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        signature_def = signature_def_json(path)
        signatures: dict[str, Signature] = {}
        for key, function in loaded.signatures.items():
            inputs = {
                name: InputSpec(
                    name,
                    np.dtype(object)
                    if spec.dtype == tf.string
                    else np.dtype(spec.dtype.as_numpy_dtype),
                    None if spec.shape.rank is None else tuple(spec.shape.as_list()),
                )
                for name, spec in function.structured_input_signature[1].items()
            }
            signatures[key] = Signature(key, function, inputs, tuple(function.structured_outputs))
        _warm_up(version, path, signatures)
    except LoadError:
        raise
    except (tf.errors.OpError, IndexError, OSError, ValueError, KeyError) as e:
        lines = str(e).strip().splitlines()
        raise LoadError(
            _classify(e), type(e).__name__, lines[0] if lines else repr(e), ref.error_file(e, path)
        ) from e
    return Servable(version, path, loaded, signatures, signature_def)


def _warm_up(version: int, path: Path, signatures: dict[str, Signature]) -> None:
    """Run the canary inputs once; refuse a version whose answers differ from its
    canary (the weights are not the ones exported) or that has no usable signature."""
    signature = signatures.get(ref.SIGNATURE_NAME)
    if signature is None:
        raise LoadError(
            "UNKNOWN", "SignatureError", f"no '{ref.SIGNATURE_NAME}' signature in {path}", None
        )
    try:
        canary = ref.load_canary(path)
    except FileNotFoundError:
        canary = None
    except (OSError, ValueError) as e:
        raise LoadError(
            "DATA_LOSS", type(e).__name__, f"unreadable canary: {e}", str(ref.canary_file(path))
        ) from e
    if len(signature.inputs) != 1:
        return  # not the reference model shape: loading it was the whole check
    ((name, spec),) = signature.inputs.items()
    rows = canary["inputs"] if canary else ref.CANARY_INPUTS
    if spec.dtype.kind != "f" or spec.shape is None or len(spec.shape) != 2:
        return
    outputs = signature({name: np.asarray(rows, dtype=spec.dtype)})
    if canary is None or len(outputs) != 1:
        return
    got = next(iter(outputs.values()))
    want = np.asarray(canary["outputs"], dtype=np.float64)
    tolerance = float(canary.get("tolerance", ref.CANARY_TOLERANCE))
    # NaN where the export computed NaN is the version as exported (a diverged run):
    # loaded, as TF Serving would; judging it is the quality gate's business
    if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=tolerance,
                                                  equal_nan=True):  # fmt: skip
        worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        raise LoadError(
            "DATA_LOSS",
            "CanaryMismatch",
            f"version {version} answers its canary inputs off by up to {worst:.3g} "
            f"(tolerance {tolerance:g})",
            str(ref.canary_file(path)),
        )


@dataclass
class ModelStore:
    """Polls a base path and keeps the versions its policy selects serving; resolves
    version labels."""

    model_name: str
    base_path: Path
    journal: Journal | None = None
    loader: Callable[[int, Path], Servable] = load_version
    config: ServingConfig = field(default_factory=ServingConfig)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loaded: dict[int, Servable] = field(default_factory=dict)  # replaced, never mutated
    _states: dict[int, VersionState] = field(default_factory=dict)
    _not_found: frozenset[int] = frozenset()
    polled: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)

    def current(self) -> Servable | None:
        """The newest loaded version: what a request without version or label gets."""
        loaded = self._loaded
        return loaded[max(loaded)] if loaded else None

    def loaded(self, version: int) -> Servable | None:
        return self._loaded.get(version)

    def loaded_versions(self) -> list[int]:
        return sorted(self._loaded)

    def label_version(self, label: str) -> int | None:
        return self.config.labels.get(label)

    def status(self) -> list[dict[str, Any]]:
        """Known versions, newest first, in TF Serving's ``model_version_status`` form."""
        with self._lock:
            return [self._states[v].as_json() for v in sorted(self._states, reverse=True)]

    def version_state(self, version: int) -> VersionState | None:
        with self._lock:
            return self._states.get(version)

    def apply_config(self, config: ServingConfig) -> str | None:
        """Make *config* the one in force, or say why not (then the old one stays): as in
        TF Serving, a label may only name a version that is AVAILABLE now."""
        with self._lock:
            for label, version in sorted(config.labels.items()):
                if version not in self._loaded:
                    return (
                        f"Request to assign label to version {version} of model "
                        f"{self.model_name}, which is not currently available for inference"
                        f" (label {label!r})"
                    )
            self.config = config
            self._not_found = frozenset()
        self.wake.set()  # a new policy takes effect at the next poll, which starts now
        return None

    def _record(self, event: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.record(event, **fields)

    def _set(self, state: VersionState) -> None:
        with self._lock:
            self._states[state.version] = state

    def poll_once(self) -> None:
        """One look at the base path: forget vanished versions, load what the policy
        selects, then unload what it no longer selects (availability-preserving)."""
        on_disk = ref.version_dirs(self.base_path)
        policy = self.config.policy
        loaded = self._loaded
        with self._lock:
            for version in list(self._states):
                if version not in on_disk and version not in loaded:
                    del self._states[version]
        keep = self._select(policy, on_disk, loaded)
        if not keep:
            keep = set(loaded)  # nothing of the selection serves: keep what does
        for version in sorted(set(loaded) - keep):
            self._unload(version)
        if policy.kind == "specific":
            missing = policy.versions - set(on_disk) - set(self._loaded)
            for version in sorted(missing - self._not_found):
                log.warning(
                    "version %d of model %s, named by the 'specific' version policy, "
                    "was not found in %s", version, self.model_name, self.base_path,
                )  # fmt: skip
                self._record("serving.version_not_found", version=version)
            self._not_found = frozenset(missing)

    def _select(
        self, policy: VersionPolicy, on_disk: dict[int, Path], loaded: dict[int, Any]
    ) -> set[int]:
        """The versions to serve, loading those not loaded yet.  ``latest`` takes the N
        newest that load (a loaded version whose directory vanished still counts);
        ``all`` and ``specific`` take every one on disk that loads, and keep a vanished
        loaded one only while none of them serves."""
        keep: set[int] = set()
        if policy.kind == "latest":
            for version in sorted(set(on_disk) | set(loaded), reverse=True):
                if len(keep) == policy.num_versions:
                    break
                if version in loaded or self._load(version, on_disk[version]):
                    keep.add(version)
            return keep
        wanted = set(on_disk) if policy.kind == "all" else set(on_disk) & policy.versions
        for version in sorted(wanted, reverse=True):
            if version in loaded or self._load(version, on_disk[version]):
                keep.add(version)
        if not keep:
            keep = {
                v
                for v in loaded
                if v not in on_disk and (policy.kind == "all" or v in policy.versions)
            }
        return keep

    def _load(self, version: int, path: Path) -> bool:
        print_ = fingerprint(path)
        known = self.version_state(version)
        if known is not None and known.error_code != "OK" and known.fingerprint == print_:
            return False  # failed before, unchanged since: do not retry
        return self._try_load(version, path, print_)

    def _unload(self, version: int) -> None:
        with self._lock:
            self._loaded = {v: s for v, s in self._loaded.items() if v != version}
            old = self._states.get(version)
            self._states[version] = VersionState(
                version, "END", fingerprint=None if old is None else old.fingerprint
            )
        self._record("serving.version_unloaded", version=version)

    def _try_load(self, version: int, path: Path, print_: Fingerprint) -> bool:
        self._set(VersionState(version, "LOADING", fingerprint=print_))
        started = time.monotonic()
        try:
            servable = self.loader(version, path)
        except LoadError as e:
            self._set(VersionState(version, "END", e.code, e.message, print_))
            self._record(
                "serving.load_failed",
                version=version,
                path=str(path),
                file=e.file,
                error_type=e.error_type,
                error=e.message,
            )
            return False
        except Exception as e:  # noqa: BLE001 - a bad version must never stop serving
            message = f"{type(e).__name__}: {e}".splitlines()[0]
            self._set(VersionState(version, "END", "UNKNOWN", message, print_))
            self._record(
                "serving.load_failed",
                version=version,
                path=str(path),
                file=None,
                error_type=type(e).__name__,
                error=message,
            )
            return False
        load_s = time.monotonic() - started
        with self._lock:
            self._loaded = {**self._loaded, version: servable}
            self._states[version] = VersionState(version, "AVAILABLE", fingerprint=print_)
        self._record("serving.version_loaded", version=version, load_s=round(load_s, 4))
        return True

    def run(self, stop: threading.Event, poll_interval: float) -> None:
        """Poll until *stop* is set; the first poll happens at once, and a new config
        (``wake``) starts the next one early."""
        while not stop.is_set():
            self.wake.clear()
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep serving whatever happens to the disk
                log.exception("polling %s failed", self.base_path)
            self.polled.set()
            self.wake.wait(poll_interval)
