"""Canary inputs for a user's model: read from a request file, or made from its signature.

A canary is a small fixed batch that every probe sends.  A stack file names a file in
TF Serving's REST request format (``{"instances": [...]}`` rows, or ``{"inputs": ...}``
columns), or ``auto``: seeded inputs made from the signature's dtypes and shapes, as
TF Serving's metadata reports them.  Either way the canary is kept as rows
("instances"), the form every probe sends, and checked against the signature so a
mismatch is one message naming the expected inputs rather than a stream of 400s.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from chaoskit.errors import ConfigError

AUTO_BATCH = 4
_FLOATS = {"DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16"}
_INTS = {"DT_INT8", "DT_INT16", "DT_INT32", "DT_INT64", "DT_UINT8", "DT_UINT16",
         "DT_UINT32", "DT_UINT64"}  # fmt: skip


def read_json_file(path: Path, *, what: str, where: str) -> Any:
    """The JSON document in *path*; ConfigError naming *where*, *what* it is and the file."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {what} {str(path)!r}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"{where}: {what} {str(path)!r} is not JSON: {e}") from e


def read_canary_file(path: Path, *, where: str) -> list[Any]:
    """The rows of a request file in TF Serving's REST format; ConfigError naming *where*."""
    body = read_json_file(path, what="canary file", where=where)
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise ConfigError(
            f"{where}: canary file {str(path)!r} must hold one of \"instances\" or \"inputs\" "
            "(TF Serving's REST request format)"
        )
    rows = body["instances"] if "instances" in body else columns_to_rows(body["inputs"], where)
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}: canary file {str(path)!r} holds no instances")
    return rows


def columns_to_rows(inputs: Any, where: str) -> list[Any]:
    """``inputs`` (columnar) as ``instances`` (rows): one dict per row for named inputs."""
    if not isinstance(inputs, dict):
        return list(inputs) if isinstance(inputs, list) else [inputs]
    sizes = {name: len(v) for name, v in inputs.items() if isinstance(v, list)}
    if len(sizes) != len(inputs) or len(set(sizes.values())) != 1:
        raise ConfigError(
            f"{where}: every named input of the canary needs the same batch size, got {sizes}"
        )
    batch = next(iter(sizes.values()))
    return [{name: inputs[name][i] for name in inputs} for i in range(batch)]


def signature_inputs(metadata: dict[str, Any], signature: str) -> dict[str, dict[str, Any]]:
    """name -> {"dtype", "shape"} of *signature* in a metadata answer; shape's -1 = any."""
    defs = (metadata.get("metadata") or {}).get("signature_def", {}).get("signature_def", {})
    if signature not in defs:
        raise ConfigError(
            f"model signature {signature!r} not found (the model has: {', '.join(sorted(defs))})"
        )
    found = {}
    for name, info in defs[signature].get("inputs", {}).items():
        shape = info.get("tensor_shape", {})
        dims = None if shape.get("unknown_rank") else [int(d["size"]) for d in shape.get("dim", [])]
        found[name] = {"dtype": info.get("dtype"), "shape": dims}
    return found


def auto_canary(inputs: dict[str, dict[str, Any]], *, seed: int = 0) -> list[Any]:
    """A seeded batch for these signature inputs: floats in [-1, 1], ints in {0, 1},
    strings "chaoskit", booleans; unknown dimensions are 1."""
    rng = random.Random(seed)

    def value(dtype: str, dims: list[int]) -> Any:
        if dims:
            return [value(dtype, dims[1:]) for _ in range(max(1, dims[0]))]
        if dtype in _FLOATS:
            return round(rng.uniform(-1.0, 1.0), 4)
        if dtype in _INTS:
            return rng.randint(0, 1)
        if dtype == "DT_BOOL":
            return rng.random() < 0.5
        if dtype == "DT_STRING":
            return "chaoskit"
        raise ConfigError(f"canary = \"auto\" cannot make inputs of dtype {dtype}; "
                          "give a canary file instead")  # fmt: skip

    def row_value(spec: dict[str, Any]) -> Any:
        dims = spec["shape"] or [-1]
        return value(spec["dtype"], dims[1:])  # dims[0] is the batch

    if len(inputs) == 1:
        (spec,) = inputs.values()
        return [row_value(spec) for _ in range(AUTO_BATCH)]
    return [{name: row_value(spec) for name, spec in inputs.items()} for _ in range(AUTO_BATCH)]


def check_canary(rows: list[Any], inputs: dict[str, dict[str, Any]], *, where: str) -> None:
    """ConfigError when *rows* do not fit the signature: names, and per name the shape."""
    expected = ", ".join(
        f"{n} ({s['dtype']}, shape {s['shape']})" for n, s in sorted(inputs.items())
    )
    only = next(iter(inputs)) if len(inputs) == 1 else None
    for row in rows:
        if only is not None and not (isinstance(row, dict) and set(row) == {only}):
            values = {only: row}
        elif isinstance(row, dict):
            values = row
        else:
            raise ConfigError(f"{where}: each canary instance must name the inputs {expected}")
        if set(values) != set(inputs):
            raise ConfigError(
                f"{where}: canary names inputs {sorted(values)}; the signature expects {expected}"
            )
        for name, v in values.items():
            dims = inputs[name]["shape"]
            if dims is not None and _rank(v) != len(dims) - 1:
                raise ConfigError(
                    f"{where}: canary input {name!r} has rank {_rank(v)} per instance; the "
                    f"signature expects {expected}"
                )


def _rank(value: Any) -> int:
    return 1 + _rank(value[0]) if isinstance(value, list) and value else int(
        isinstance(value, list))
