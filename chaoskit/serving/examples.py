"""TF Serving's ``:classify`` and ``:regress``: ``tf.Example`` requests in its REST JSON.

A request is ``{"signature_name": ..., "context": {feature: value}, "examples":
[{feature: value, ...}, ...]}``; each example becomes a serialized ``tf.train.Example``
(the context's features first, the example's own over them, as TF Serving's
``ExampleListWithContext`` concatenates them) fed to the signature's one DT_STRING input.
A JSON number with a fraction is a float feature, one without an int64, a string (or
``{"b64": ...}``) bytes, ``true``/``false`` int64 1/0, a list the values of one feature.
The signature must say what it is for (``method_name``), as TF Serving checks, and the
answer is ``{"results": ...}``: per example the ``[label, score]`` pairs of a classifier
(``classes`` and/or ``scores``), or the one value of a regressor (``outputs``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
METHOD_OF = {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}
_WHAT = {"classify": "classification", "regress": "regression"}


class ExamplesError(ValueError):
    """The request or the signature does not fit; the message is TF Serving's."""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _add_value(feature: Any, name: str, value: Any) -> None:
    kind = feature.WhichOneof("kind")

    def need(wanted: str) -> None:
        if kind not in (None, wanted):
            expecting = {"bytes_list": "bytes", "float_list": "float",
                         "int64_list": "int64"}[kind]  # fmt: skip
            raise ExamplesError(f"Unexpected element type in feature: {name} expecting type: "
                                f"{expecting}")  # fmt: skip

    if isinstance(value, bool):
        need("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, int):
        need("int64_list")
        if not -(2**63) <= value < 2**63:
            raise ExamplesError(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)
    elif isinstance(value, float):
        need("float_list")
        if abs(value) > float(np.finfo(np.float32).max) and np.isfinite(value):
            raise ExamplesError(f"Cannot convert JSON value: {_json(value)} to float without "
                                "loss of precision.")  # fmt: skip
        feature.float_list.value.append(value)
    elif isinstance(value, str):
        need("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        need("bytes_list")
        try:
            feature.bytes_list.value.append(base64.b64decode(value["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise ExamplesError("Unable to base64 decode") from None
    else:
        kind_name = {type(None): "Null", list: "Array", dict: "Object"}.get(type(value), "?")
        raise ExamplesError(f"Feature: {name} has element with unexpected JSON type: {kind_name}")


def _example(value: Any) -> Any:
    from tensorflow.core.example import example_pb2

    if not isinstance(value, dict):
        kind = {list: "Array", str: "String", type(None): "Null"}.get(type(value), "Number")
        raise ExamplesError(f"Example must be JSON object but got JSON {kind}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_value(feature, name, item)
    return example


def serialized_examples(doc: dict[str, Any], method: str) -> list[bytes]:
    """Each example of a classify/regress request, serialized with the context's features."""
    context = _example(doc["context"]).SerializeToString() if "context" in doc else b""
    examples = doc.get("examples")
    if "examples" not in doc:
        raise ExamplesError(f"JSON Value: {_json(doc)} When method is {method}, key 'examples' "
                            "is expected and was not found")  # fmt: skip
    if not isinstance(examples, list):
        raise ExamplesError(f"JSON Value: {_json(doc)} Expecting 'examples' value to be an "
                            "list/array")  # fmt: skip
    if not examples:
        raise ExamplesError(f"JSON Value: {_json(doc)} 'examples' value is an empty array")
    return [context + _example(e).SerializeToString() for e in examples]


def input_name(method: str, signature_def: dict[str, Any], inputs: dict[str, Any]) -> str:
    """The signature's one string input, after TF Serving's checks of what it is for."""
    what = _WHAT[method]
    found = signature_def.get("method_name", "")
    if found != METHOD_OF[method]:
        raise ExamplesError(f"Expected {what} signature method_name to be {METHOD_OF[method]}. "
                            f"Was: {found}")  # fmt: skip
    if len(inputs) != 1:
        raise ExamplesError("Expected one input Tensor.")
    ((name, spec),) = inputs.items()
    if spec.dtype != np.dtype(object):
        raise ExamplesError(f"Expected input Tensor of DT_STRING for {what}; got another type")
    return name


def results(method: str, outputs: dict[str, np.ndarray], batch: int) -> dict[str, Any]:
    """``{"results": ...}`` from a classify or regress signature's outputs."""
    if method == "regress":
        found = outputs.get("outputs")
        if found is None:
            raise ExamplesError("No output Tensor named 'outputs' in the regression signature")
        column = np.asarray(found, dtype=np.float64).reshape(batch, -1)
        if column.shape[1] != 1:
            raise ExamplesError(f"Expected output Tensor shape to be [{batch}] or [{batch}, 1] "
                                f"but got {list(column.shape)}")  # fmt: skip
        return {"results": [float(v) for v in column[:, 0]]}
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise ExamplesError("No output Tensor named 'classes' or 'scores' in the "
                            "classification signature")  # fmt: skip
    count = np.asarray(classes if classes is not None else scores).reshape(batch, -1).shape[1]
    rows = []
    for i in range(batch):
        labels = ([c.decode() if isinstance(c, bytes) else str(c) for c in classes[i]]
                  if classes is not None else [""] * count)  # fmt: skip
        values = [float(v) for v in scores[i]] if scores is not None else [0.0] * count
        rows.append([[label, value] for label, value in zip(labels, values, strict=True)])
    return {"results": rows}
