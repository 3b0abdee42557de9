"""What the model server answers, whatever the protocol: REST and gRPC share it.

A request names a model and, at most, a version number or a label; it gets the version
it asks for (or the newest loaded), that version's signature, and the signature's
outputs, or an :class:`ApiError` carrying TF Serving's message, its HTTP status and its
canonical error code (which is also the gRPC status code's name).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chaoskit.serving import examples
from chaoskit.serving.metrics import CODE_OF_HTTP_STATUS
from chaoskit.serving.store import ModelStore, Servable, Signature
from chaoskit.serving.tensors import DEFAULT_SIGNATURE


class ApiError(Exception):
    """An answer other than 200: HTTP status, TF Serving-style message, and the
    canonical error code TF Serving would have answered it with (metrics, gRPC)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODE_OF_HTTP_STATUS.get(status, "UNKNOWN")


def servable(store: ModelStore, name: str, version: int | None, label: str | None) -> Servable:
    """The version a request asks for: by number, by label, or the newest loaded."""
    if label is not None:
        labelled = store.label_version(label) if name == store.model_name else None
        if labelled is None:
            raise ApiError(400, f"Unrecognized servable version label: {label}")
        version = labelled
    if name == store.model_name and version is None:
        current = store.current()
        if current is None:
            raise ApiError(503, f"Servable not available: no version of model {name} is loaded")
        return current
    found = store.loaded(version) if name == store.model_name and version is not None else None
    if found is None:
        spec = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        raise ApiError(404, f"Servable not found for request: {spec}")
    return found


def model_status(store: ModelStore, name: str, version: int | None) -> list[dict[str, Any]]:
    """As TF Serving's GetModelStatus (``model_version_status``): a label is not looked
    at, every version is listed unless one is asked for."""
    if name != store.model_name:
        raise ApiError(404, f"Could not find any versions of model {name}")
    states = store.status()
    if version is not None:
        states = [s for s in states if s["version"] == str(version)]
        if not states:
            raise ApiError(404, f"Could not find version {version} of model {name}")
    elif not states:
        raise ApiError(404, f"Could not find any versions of model {name}")
    return states


def signature(found: Servable, signature_name: str) -> Signature:
    """The named signature of a loaded version (TF Serving's message when it has none)."""
    result = found.signatures.get(signature_name or DEFAULT_SIGNATURE)
    if result is None:
        raise ApiError(400, f'Serving signature name: "{signature_name}" not found in '
                            "signature def")  # fmt: skip
    return result


def run(sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The signature's outputs; TensorFlow's errors as TF Serving answers them."""
    import tensorflow as tf  # loaded by now: a version is

    try:
        return sig(inputs)
    except tf.errors.InvalidArgumentError as e:
        raise ApiError(400, _first_line(e.message)) from None
    except tf.errors.DataLossError as e:
        raise ApiError(500, f"Data loss: {_first_line(e.message)}", "DATA_LOSS") from None
    except (tf.errors.OpError, ValueError, TypeError) as e:
        raise ApiError(500, f"Internal: {_first_line(str(e))}") from None


def run_examples(method: str, found: Servable, sig: Signature,
                 serialized: list[bytes]) -> dict[str, Any]:  # fmt: skip
    """``:classify`` / ``:regress`` on serialized ``tf.Example`` s: ``{"results": ...}``
    (see :mod:`chaoskit.serving.examples`)."""
    try:
        input_name = examples.input_name(method, found.signature_def.get(sig.name, {}),
                                         sig.inputs)  # fmt: skip
    except examples.ExamplesError as e:
        raise ApiError(400, str(e)) from None
    outputs = run(sig, {input_name: np.asarray(serialized, dtype=object)})
    try:
        return examples.results(method, outputs, len(serialized))
    except examples.ExamplesError as e:
        raise ApiError(400, str(e)) from None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else text
