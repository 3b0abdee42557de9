"""JSON <-> tensor conversion for the TF Serving REST predict API (numpy only, no TF).

Follows tensorflow_serving/util/json_tensor.cc closely enough that clients written
for TF Serving work unchanged: row format (``"instances"``, answered with
``"predictions"``) and columnar format (``"inputs"``, answered with ``"outputs"``),
named inputs as objects, ``{"b64": ...}`` for binary strings, NaN/Infinity allowed,
lossy number conversions refused.  Every user mistake is a :class:`RequestError`
(HTTP 400) whose message names the bad value, mostly in TF Serving's own words.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from chaoskit.errors import ChaosKitError

ROW = "row"
COLUMNAR = "columnar"
DEFAULT_SIGNATURE = "serving_default"


class RequestError(ChaosKitError, ValueError):
    """The request is invalid (TF Serving's INVALID_ARGUMENT, HTTP 400)."""


@dataclass(frozen=True)
class InputSpec:
    """What a signature expects for one named input."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def shape_text(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


_STRING = np.dtype(object)
_INT_RANGES = {
    np.dtype(t): (int(np.iinfo(t).min), int(np.iinfo(t).max))
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
}
_FLOAT_EXACT_INT = {
    np.dtype(np.float16): 2**11,
    np.dtype(np.float32): 2**24,
    np.dtype(np.float64): 2**53,
}
_TF_NAMES = {
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "bool": "DT_BOOL",
    "object": "DT_STRING",
}


def tf_type_name(dtype: np.dtype[Any]) -> str:
    return _TF_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)


def _show(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 200 else text[:197] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def parse_body(body: bytes) -> dict[str, Any]:
    """Decode a request body; the message of a parse error names reason and offset."""
    if not body.strip():
        raise RequestError("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(
            f"JSON Parse error: Invalid encoding in string. at offset: {e.start}"
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        offset = len(text[: e.pos].encode("utf-8"))
        raise RequestError(f"JSON Parse error: {e.msg} at offset: {offset}") from None
    except RecursionError:
        raise RequestError("JSON Parse error: document nested too deeply") from None
    if not isinstance(doc, dict):
        raise RequestError(f"JSON Value: {_show(doc)} Is not object")
    return doc


def signature_name(doc: dict[str, Any]) -> str:
    """The requested signature; empty or absent means ``serving_default``."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise RequestError(
            f"JSON Value: {_show(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name or DEFAULT_SIGNATURE


def _leaf(value: Any, spec: InputSpec) -> Any:
    """Check and convert one JSON scalar to *spec*'s dtype (as a Python value)."""
    dtype = spec.dtype
    if dtype == _STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise RequestError("Unable to base64 decode") from None
        if isinstance(value, dict):
            raise RequestError(
                f"JSON Value: {_show(value)} not formatted correctly for base64 data"
            )
    elif dtype == np.dtype(bool):
        if isinstance(value, bool):
            return value
    elif dtype.kind == "f":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int):
                if abs(value) > _FLOAT_EXACT_INT[dtype]:
                    raise _lossy(value, dtype)
                return float(value)
            if math.isfinite(value) and abs(value) > float(np.finfo(dtype).max):
                raise _lossy(value, dtype)
            return value
    elif dtype.kind in "iu":
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = _INT_RANGES[dtype]
            if low <= value <= high:
                return value
    else:
        raise RequestError(f"Conversion of JSON Value: {_show(value)} to type: {dtype} unsupported")
    raise RequestError(
        f"JSON Value: {_show(value)} Type: {_json_type(value)} "
        f"is not of expected type: {tf_type_name(dtype)}"
    )


def _lossy(value: Any, dtype: np.dtype[Any]) -> RequestError:
    target = "float" if dtype == np.dtype(np.float32) else dtype.name
    return RequestError(
        f"Cannot convert JSON value: {_show(value)} to {target} without loss of precision."
    )


def _dense_shape(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def to_array(value: Any, spec: InputSpec) -> np.ndarray:
    """One JSON value (scalar or nested lists) as a dense array of *spec*'s dtype."""
    shape = _dense_shape(value)
    rank = len(shape)
    flat: list[Any] = []

    def fill(v: Any, level: int) -> None:
        if not isinstance(v, list):
            if level != rank:
                raise RequestError(
                    f"JSON Value: {_show(v)} found at incorrect level: {level} in the JSON "
                    f"DOM. Expected at level: {rank}"
                )
            flat.append(_leaf(v, spec))
            return
        if level >= rank:
            raise RequestError(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(v) != shape[level]:
            raise RequestError(
                f"Encountered list at unexpected size: {len(v)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        for item in v:
            fill(item, level + 1)

    fill(value, 0)
    if spec.dtype == _STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=spec.dtype).reshape(shape)


def check_shape(array: np.ndarray, spec: InputSpec) -> None:
    """Refuse an input whose shape the signature cannot take (TF would fail later,
    with a less helpful message)."""
    if spec.shape is None:
        return
    ok = array.ndim == len(spec.shape) and all(
        want is None or want == got for want, got in zip(spec.shape, array.shape, strict=True)
    )
    if not ok:
        got = "[" + ",".join(str(d) for d in array.shape) + "]"
        raise RequestError(
            f"input '{spec.name}' has shape {got} but signature expects {spec.shape_text()}"
        )


def _row_tensors(instances: Any, specs: dict[str, InputSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise RequestError("Excepting 'instances' to be an list/array")
    if not instances:
        raise RequestError("No values in 'instances' array")
    names = sorted(specs)
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not objects and len(specs) > 1:
        raise RequestError(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, item in enumerate(instances):
        item_is_object = isinstance(item, dict) and not _is_b64(item)
        if objects != item_is_object:
            got, want = ("object", "value/list") if item_is_object else ("list", "object")
            raise RequestError(f"Expecting {want} but got {got} at item {index} of input list")
        values = item if objects else {names[0]: item}
        if set(values) != set(names):
            unknown = sorted(set(values) - set(names))
            if unknown:
                raise RequestError(f"JSON object: does not have named input: {unknown[0]}")
            raise RequestError(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_show(item)} keys must be equal to: {','.join(names)}"
            )
        for name in names:
            try:
                array = to_array(values[name], specs[name])
            except RequestError as e:
                key = f" key: {name}" if objects else ""
                raise RequestError(
                    f"Failed to process element: {index}{key} of 'instances' list. Error: {e}"
                ) from None
            if columns[name] and columns[name][0].shape != array.shape:
                first = list(columns[name][0].shape)
                raise RequestError(
                    f"Expecting shape {first} but got: {list(array.shape)} "
                    f"(element {index} of 'instances', input '{name}')"
                )
            columns[name].append(array)
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def _columnar_tensors(inputs: Any, specs: dict[str, InputSpec]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(specs) > 1:
            raise RequestError(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = next(iter(specs))
        return {name: to_array(inputs, specs[name])}
    if len(specs) == 1 and set(inputs) != set(specs):
        # A one-input signature may still get an object of its one name, nothing else.
        raise RequestError(f"Missing named input: {next(iter(specs))} in 'inputs' object.")
    tensors = {}
    for name in sorted(specs):
        if name not in inputs:
            raise RequestError(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = to_array(inputs[name], specs[name])
    return tensors


def request_tensors(
    doc: dict[str, Any], specs: dict[str, InputSpec]
) -> tuple[str, dict[str, np.ndarray]]:
    """The request format (ROW or COLUMNAR) and one checked array per named input."""
    if not specs:
        raise RequestError("Failed to get input map for signature")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise RequestError(
            "JSON Value: not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist"
        )
    if has_instances:
        fmt, tensors = ROW, _row_tensors(doc["instances"], specs)
    elif has_inputs:
        fmt, tensors = COLUMNAR, _columnar_tensors(doc["inputs"], specs)
    else:
        raise RequestError("Missing 'inputs' or 'instances' key")
    for name, array in tensors.items():
        check_shape(array, specs[name])
    return fmt, tensors


def _json_values(array: np.ndarray, name: str) -> Any:
    """Nested lists of JSON-ready values; floats in their shortest round-trip form."""
    if array.dtype.kind == "f":
        flat: list[Any] = [float(str(v)) for v in array.ravel()]
    elif array.dtype.kind in "SOU":
        flat = [_json_string(v, name) for v in array.ravel()]
    else:
        flat = array.ravel().tolist()
    if array.ndim == 0:
        return flat[0]
    return np.array(flat, dtype=object).reshape(array.shape).tolist()


def _json_string(value: Any, name: str) -> Any:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if not name.endswith("_bytes"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(raw).decode("ascii")}


def response_body(fmt: str, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """``{"predictions": ...}`` for ROW requests, ``{"outputs": ...}`` for COLUMNAR."""
    if fmt == COLUMNAR:
        if len(outputs) == 1:
            name, array = next(iter(outputs.items()))
            return {"outputs": _json_values(array, name)}
        return {"outputs": {name: _json_values(a, name) for name, a in sorted(outputs.items())}}
    batch = {a.shape[0] if a.ndim else None for a in outputs.values()}
    if len(batch) != 1 or None in batch:
        raise ValueError(
            "output tensors do not share one batch size, so the answer has no row format; "
            "use the columnar ('inputs') format"
        )
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return {"predictions": _json_values(array, name)}
    columns = {name: _json_values(a, name) for name, a in sorted(outputs.items())}
    rows = int(batch.pop() or 0)
    return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(rows)]}
