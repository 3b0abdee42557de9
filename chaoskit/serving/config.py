"""The model server's model config: TF Serving's version policy and version labels, in JSON.

TF Serving reads a ``ModelServerConfig`` in protobuf text format; chaoskit's server reads
the JSON equivalent of the one ``ModelConfig`` it serves (the same field names), and
nothing else::

    {"model_version_policy": {"specific": {"versions": [3, 4]}},
     "version_labels": {"stable": 3, "canary": 4}}

``model_version_policy`` is one of ``{"latest": {"num_versions": N}}`` (the default,
N = 1), ``{"all": {}}`` or ``{"specific": {"versions": [...]}}``; both keys are
optional.  Versions may be JSON numbers or decimal strings (proto3 JSON writes int64
as strings).  As in TF Serving, a label may only name a version that is AVAILABLE when
the config is applied (else the whole config is refused, logged, and the previous one
stays in force), and a label does not keep its version loaded: the policy decides.  At
start-up the file's policy applies at once and its labels after the first poll has
loaded the versions (TF Serving would refuse to start).  :func:`model_server_config_text`
writes the same settings as the protobuf text a real tensorflow/serving reads, so one
config drives either server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoskit.errors import ConfigError

POLICIES = ("latest", "all", "specific")
MAX_VERSION = 2**63 - 1


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: the newest N, all, or a fixed set."""

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def as_json(self) -> dict[str, Any]:
        if self.kind == "latest":
            return {"latest": {"num_versions": self.num_versions}}
        if self.kind == "all":
            return {"all": {}}
        return {"specific": {"versions": sorted(self.versions)}}


@dataclass(frozen=True)
class ServingConfig:
    """One model's version policy and labels (label name -> version)."""

    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"model_version_policy": self.policy.as_json(), "version_labels": dict(self.labels)}


def _version(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        raise ConfigError(f"{where} must be a version number >= 0, got {value!r}")
    return value


def _object(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(allowed)})")
    return value


def _policy(value: Any) -> VersionPolicy:
    where = "model_version_policy"
    doc = _object(value, where, POLICIES)
    if len(doc) != 1:
        raise ConfigError(f"{where} must name exactly one of {', '.join(POLICIES)}, got {value!r}")
    ((kind, body),) = doc.items()
    if kind == "all":
        _object(body, f"{where}.all", ())
        return VersionPolicy("all")
    if kind == "latest":
        latest = _object(body, f"{where}.latest", ("num_versions",))
        n = latest.get("num_versions", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}.latest.num_versions must be an integer >= 1, got {n!r}")
        return VersionPolicy("latest", num_versions=n)
    specific = _object(body, f"{where}.specific", ("versions",))
    versions = specific.get("versions")
    if not isinstance(versions, list) or not versions:
        raise ConfigError(f"{where}.specific.versions must be a non-empty list, got {versions!r}")
    return VersionPolicy(
        "specific",
        versions=frozenset(_version(v, f"{where}.specific.versions[]") for v in versions),
    )


def parse_config(text: str | bytes, source: str = "model config") -> ServingConfig:
    """A config from its JSON text; a ``ConfigError`` naming *source* and the bad value."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{source}: not valid JSON: {e}") from e
    try:
        doc = _object(doc, "the model config", ("model_version_policy", "version_labels"))
        policy = _policy(doc["model_version_policy"]) if "model_version_policy" in doc else None
        labels_doc = doc.get("version_labels", {})
        if not isinstance(labels_doc, dict):
            raise ConfigError(f"version_labels must be a JSON object, got {labels_doc!r}")
        labels: dict[str, int] = {}
        for label, version in labels_doc.items():
            if not label:
                raise ConfigError("version_labels: a label name must not be empty")
            labels[label] = _version(version, f"version_labels[{label!r}]")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return ServingConfig(policy or VersionPolicy(), labels)


def read_config(path: Path) -> tuple[bytes, ServingConfig]:
    """The raw bytes and parsed config of *path*; OSError and ConfigError name the file."""
    raw = path.read_bytes()
    return raw, parse_config(raw, str(path))


def write_config(path: Path, config: ServingConfig) -> None:
    """Replace *path* with *config* atomically: a server polling it never reads half a file."""
    from chaoskit.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(config.as_json()) + "\n")


def model_server_config_text(name: str, base_path: str, config: ServingConfig) -> str:
    """The same settings as tensorflow/serving's ``--model_config_file`` (protobuf text)."""
    policy = config.policy
    if policy.kind == "latest":
        policy_text = f"latest {{ num_versions: {policy.num_versions} }}"
    elif policy.kind == "all":
        policy_text = "all {}"
    else:
        policy_text = "specific { " + " ".join(f"versions: {v}" for v in sorted(policy.versions))
        policy_text += " }"
    labels = "".join(
        f"    version_labels {{ key: {json.dumps(k)} value: {v} }}\n"
        for k, v in sorted(config.labels.items())
    )
    return (
        "model_config_list {\n  config {\n"
        f"    name: {json.dumps(name)}\n    base_path: {json.dumps(base_path)}\n"
        f'    model_platform: "tensorflow"\n    model_version_policy {{ {policy_text} }}\n'
        f"{labels}  }}\n}}\n"
    )


class ConfigWatcher:
    """Re-reads the config file and hands every new content to *apply*, as TF Serving's
    ``--model_config_file_poll_wait_seconds`` does.

    *apply* returns None when the config took effect, else why it was refused; a
    refused or unreadable file leaves the previous config in force and is retried at
    every poll (a label may name a version that is still loading), but reported only
    once per content and reason through *report*.  ``poll_wait`` 0 reads the file until
    it has been applied once, then never again.
    """

    def __init__(
        self,
        path: Path,
        apply: Callable[[ServingConfig], str | None],
        report: Callable[[str, dict[str, Any]], None],
        *,
        applied: bytes | None = None,
    ) -> None:
        self.path = path
        self.apply = apply
        self.report = report
        self.applied = applied
        self._reported: tuple[bytes | None, str] | None = None

    def poll_once(self) -> bool:
        """One look at the file; True when a new config took effect."""
        raw: bytes | None = None
        try:
            raw, config = read_config(self.path)
            if raw == self.applied:
                return False
            error = self.apply(config)
        except OSError as e:
            error = f"cannot read model config {self.path}: {e.strerror or e}"
        except ConfigError as e:
            error = str(e)
        if error is None:
            self.applied = raw
            self._reported = None
            self.report("serving.config_applied", {"path": str(self.path), **config.as_json()})
            return True
        if self._reported != (raw, error):
            self._reported = (raw, error)
            self.report("serving.config_refused", {"path": str(self.path), "error": error})
        return False

    def run(self, stop: threading.Event, poll_wait: float, retry: float) -> None:
        """Poll until *stop*; with *poll_wait* 0, only until the file has been applied."""
        while not stop.is_set():
            self.poll_once()
            if poll_wait <= 0 and self.applied is not None:
                return
            stop.wait(poll_wait if poll_wait > 0 else retry)
