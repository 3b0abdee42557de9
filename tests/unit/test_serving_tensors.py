"""JSON <-> tensor conversion of the predict API (numpy only, no server, no TF)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaoskit.serving.tensors import (
    COLUMNAR,
    ROW,
    InputSpec,
    RequestError,
    parse_body,
    request_tensors,
    response_body,
    signature_name,
)

X = {"x": InputSpec("x", np.dtype(np.float32), (None, 8))}
TWO = {
    "a": InputSpec("a", np.dtype(np.float32), (None, 2)),
    "b": InputSpec("b", np.dtype(np.int32), (None,)),
}
ROWS = [[float(i + j) for j in range(8)] for i in range(3)]


def convert(doc, specs=X):
    return request_tensors(doc, specs)


def test_row_and_columnar_give_the_same_batch():
    fmt_row, row = convert({"instances": ROWS})
    fmt_col, col = convert({"inputs": ROWS})
    named, _ = convert({"instances": [{"x": r} for r in ROWS]}), convert({"inputs": {"x": ROWS}})
    assert (fmt_row, fmt_col) == (ROW, COLUMNAR)
    assert row["x"].dtype == np.float32 and row["x"].shape == (3, 8)
    np.testing.assert_array_equal(row["x"], col["x"])
    np.testing.assert_array_equal(row["x"], named[1]["x"])


def test_multiple_inputs_rows_are_objects_and_columns_an_object():
    fmt, t = convert({"instances": [{"a": [1, 2], "b": 3}, {"a": [4.5, 5], "b": -1}]}, TWO)
    assert fmt == ROW and t["a"].shape == (2, 2) and t["b"].tolist() == [3, -1]
    assert t["b"].dtype == np.int32
    fmt, t = convert({"inputs": {"a": [[1, 2]], "b": [7]}}, TWO)
    assert fmt == COLUMNAR and t["a"].tolist() == [[1.0, 2.0]]
    with pytest.raises(RequestError, match="plain list, but expecting list of objects"):
        convert({"instances": [[1, 2]]}, TWO)
    with pytest.raises(RequestError, match="Missing named input: b"):
        convert({"inputs": {"a": [[1, 2]]}}, TWO)
    with pytest.raises(RequestError, match="keys must be equal to: a,b"):
        convert({"instances": [{"a": [1, 2]}]}, TWO)
    with pytest.raises(RequestError, match="does not have named input: c"):
        convert({"instances": [{"a": [1, 2], "b": 1, "c": 0}]}, TWO)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"instances": ROWS, "inputs": ROWS}, "only one of 'inputs' or 'instances'"),
        ({}, "Missing 'inputs' or 'instances' key"),
        ({"instances": {"x": ROWS}}, "to be an list/array"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"instances": [ROWS[0], ROWS[0][:7]]}, "Expecting shape [8] but got: [7]"),
        ({"instances": [[1, 2, 3]]}, "has shape [1,3] but signature expects [-1,8]"),
        ({"inputs": ROWS[0]}, "has shape [8] but signature expects [-1,8]"),
        ({"instances": [[1, [2], 3, 4, 5, 6, 7, 8]]}, "list at unexpected level: 1 expected < 1"),
        ({"instances": [[[1], 2, 3, 4, 5, 6, 7, 8]]}, "2 found at incorrect level: 1"),
        ({"instances": [["a"] * 8]}, 'Value: "a" Type: String is not of expected type: DT_FLOAT'),
        ({"instances": [[True] * 8]}, "Type: True is not of expected type: DT_FLOAT"),
        ({"instances": [[None] * 8]}, "Type: Null"),
        ({"instances": [[2**25] * 8]}, "without loss of precision"),
        ({"instances": [[1e39] * 8]}, "without loss of precision"),
        ({"instances": [ROWS[0], {"x": ROWS[1]}]}, "Expecting value/list but got object at item 1"),
        ({"inputs": {"y": ROWS}}, "Missing named input: x"),
    ],
)  # fmt: skip
def test_invalid_requests_name_the_problem(doc, needle):
    with pytest.raises(RequestError) as caught:
        convert(doc)
    assert needle in str(caught.value)


def test_ints_are_exact_and_range_checked():
    spec = {"b": InputSpec("b", np.dtype(np.int32), (None,))}
    assert convert({"inputs": [2**31 - 1, -(2**31)]}, spec)[1]["b"].tolist() == [
        2**31 - 1,
        -(2**31),
    ]
    for bad in ([2**31], [1.5], [True], ["1"]):
        with pytest.raises(RequestError, match="DT_INT32"):
            convert({"inputs": bad}, spec)


def test_strings_and_base64():
    spec = {"s": InputSpec("s", np.dtype(object), (None,))}
    _, t = convert({"instances": ["hé", {"b64": "AAEC"}]}, spec)
    assert t["s"].tolist() == ["hé".encode(), b"\x00\x01\x02"]
    with pytest.raises(RequestError, match="Unable to base64 decode"):
        convert({"instances": [{"b64": "%%%"}]}, spec)
    with pytest.raises(RequestError, match="not formatted correctly for base64 data"):
        convert({"inputs": [{"b64": "AA", "x": 1}]}, spec)


def test_unknown_rank_and_scalar_inputs_pass_through():
    spec = {"v": InputSpec("v", np.dtype(np.float64), None)}
    assert convert({"inputs": 2.5}, spec)[1]["v"].shape == ()
    assert convert({"inputs": [[[1]]]}, spec)[1]["v"].shape == (1, 1, 1)


def test_parse_body_errors_name_reason_and_offset():
    with pytest.raises(RequestError, match=r"^JSON Parse error: .* at offset: 15$"):
        parse_body(b'{"instances": [,]}')
    with pytest.raises(RequestError, match="The document is empty"):
        parse_body(b"  ")
    with pytest.raises(RequestError, match="Invalid encoding"):
        parse_body(b'{"a": "\xff"}')
    with pytest.raises(RequestError, match="Is not object"):
        parse_body(b"[1, 2]")
    # Byte offsets, not character offsets, as rapidjson reports them.
    with pytest.raises(RequestError, match="at offset: 9$"):
        parse_body('{"é": 1 2}'.encode())
    assert math.isnan(parse_body(b'{"x": NaN}')["x"])


def test_signature_name_defaults_and_must_be_a_string():
    assert signature_name({}) == "serving_default" == signature_name({"signature_name": ""})
    assert signature_name({"signature_name": "other"}) == "other"
    with pytest.raises(RequestError, match="must be a string"):
        signature_name({"signature_name": 3})


def test_response_row_and_columnar_forms():
    y = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    z = np.array([1, 2], dtype=np.int64)
    assert response_body(ROW, {"y": y}) == {"predictions": [[0.1, 0.2], [0.3, 0.4]]}
    assert response_body(COLUMNAR, {"y": y}) == {"outputs": [[0.1, 0.2], [0.3, 0.4]]}
    assert response_body(ROW, {"y": y, "z": z}) == {
        "predictions": [{"y": [0.1, 0.2], "z": 1}, {"y": [0.3, 0.4], "z": 2}]
    }
    assert response_body(COLUMNAR, {"y": y, "z": z}) == {
        "outputs": {"y": [[0.1, 0.2], [0.3, 0.4]], "z": [1, 2]}
    }
    with pytest.raises(ValueError, match="batch size"):
        response_body(ROW, {"y": y, "z": np.array([1, 2, 3])})


def test_response_special_values_and_bytes():
    out = response_body(COLUMNAR, {"y": np.array([np.nan, np.inf, -np.inf], dtype=np.float32)})
    text = json.dumps(out)
    assert text == '{"outputs": [NaN, Infinity, -Infinity]}'
    raw = np.array([b"ok", b"\xff\x00"], dtype=object)
    assert response_body(ROW, {"s": raw}) == {"predictions": ["ok", {"b64": "/wA="}]}
    assert response_body(ROW, {"s_bytes": raw})["predictions"][0] == {"b64": "b2s="}


@given(
    st.lists(
        st.lists(
            st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=8, max_size=8
        ),
        min_size=1,
        max_size=5,
    )
)
def test_float32_values_survive_the_round_trip(rows):
    """What a client sends as float32 comes back bit-identical through JSON."""
    _, t = convert({"instances": rows})
    np.testing.assert_array_equal(t["x"], np.array(rows, dtype=np.float32))
    echoed = json.loads(json.dumps(response_body(ROW, {"y": t["x"]})))["predictions"]
    np.testing.assert_array_equal(np.array(echoed, dtype=np.float32), t["x"])
