"""Toxic validation and slicing rules of the embedded Toxiproxy server."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaoskit.errors import ProxyError
from chaoskit.proxy.model import (
    TOXIC_ATTRIBUTES,
    ApiError,
    Toxic,
    decode_json,
    parse_address,
    slice_offsets,
)


def test_toxic_defaults_follow_toxiproxy() -> None:
    toxic = Toxic.from_json({"type": "latency", "attributes": {"latency": 100}})
    assert toxic.to_json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 100, "jitter": 0},
    }
    assert Toxic.from_json({"type": "noop", "stream": "upstream"}).name == "noop_upstream"


@pytest.mark.parametrize("toxic_type", sorted(TOXIC_ATTRIBUTES))
def test_every_toxic_type_is_accepted_with_its_attributes(toxic_type: str) -> None:
    attrs = {k: 5 for k in TOXIC_ATTRIBUTES[toxic_type]}
    if toxic_type == "slicer":
        attrs = {"average_size": 10, "size_variation": 3, "delay": 5}
    toxic = Toxic.from_json({"type": toxic_type, "attributes": attrs})
    assert toxic.attributes == attrs


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"type": "nope"}, "invalid toxic type"),
        ({"type": "latency", "stream": "sideways"}, "stream was invalid"),
        ({"type": "latency", "attributes": {"latency": -1}}, "must not be negative"),
        ({"type": "latency", "attributes": {"latency": "fast"}}, "is not a number"),
        ({"type": "latency", "attributes": {"latency": True}}, "is not a number"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, "is not an integer"),
        ({"type": "bandwidth", "attributes": []}, "must be a JSON object"),
        ({"type": "latency", "toxicity": 2}, "between 0 and 1"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, "average_size"),
        ({"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}},
         "size_variation"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_toxics_are_400_with_a_clear_message(body: object, fragment: str) -> None:
    with pytest.raises(ApiError) as info:
        Toxic.from_json(body)
    assert info.value.status == 400
    assert fragment in info.value.message
    assert isinstance(info.value, ProxyError)


def test_update_validates_before_changing_anything() -> None:
    toxic = Toxic.from_json({"type": "latency", "attributes": {"latency": 10}})
    with pytest.raises(ApiError):
        toxic.updated({"attributes": {"latency": -5}})
    assert toxic.attributes["latency"] == 10
    assert toxic.updated({"attributes": {"jitter": 3}, "toxicity": 0.5}) == (
        0.5, {"latency": 10, "jitter": 3})


def test_decode_json_rejects_garbage_as_400() -> None:
    for raw in (b"{", b"", b"\xff\xfe", b"[1,"):
        with pytest.raises(ApiError) as info:
            decode_json(raw)
        assert info.value.status == 400
        assert info.value.message.startswith("bad request body")


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:0", "listen") == ("127.0.0.1", 0)
    assert parse_address("[::1]:80", "listen") == ("::1", 80)
    assert parse_address(":8080", "listen") == ("", 8080)
    for bad in ("127.0.0.1", "host:port", "1.2.3.4:70000", "::1:80", "[zz]:1", 5):
        with pytest.raises(ApiError) as info:
            parse_address(bad, "listen")
        assert info.value.status == 400


@given(
    size=st.integers(0, 5000),
    average=st.integers(1, 300),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_slices_cover_the_chunk_in_order_near_the_average(
    size: int, average: int, data: st.DataObject, seed: int
) -> None:
    variation = data.draw(st.integers(0, average - 1))
    cuts = slice_offsets(size, average, variation, random.Random(seed))
    assert cuts[-1] == size
    starts = [0, *cuts[:-1]]
    pieces = [end - start for start, end in zip(starts, cuts, strict=True)]
    assert all(p >= 0 for p in pieces)
    if size > average + variation:
        # halving never yields a piece larger than average + variation
        assert max(pieces) <= average + variation
