"""The Toxiproxy data model: API errors, toxic definitions and their validation.

Kept free of sockets and asyncio so the HTTP layer, the Python API and the config
loader share one set of rules, and every rule answers with Toxiproxy's status code.
"""

from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import dataclass, field
from typing import Any

from chaoskit.errors import ProxyError

STREAMS = ("upstream", "downstream")

# attribute name -> default, per toxic type (all attributes are integers, as in Toxiproxy)
TOXIC_ATTRIBUTES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
    "noop": {},
}

_MAX_ATTR = 2**53  # bigger numbers are certainly a mistake (and overflow timers)


class ApiError(ProxyError):
    """An API request that Toxiproxy would refuse; ``status`` is its HTTP status code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def bad_request(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(name: str) -> ApiError:
    return ApiError(f"missing required field: {name}", 400)


def proxy_not_found(name: str) -> ApiError:
    return ApiError(f"proxy not found: {name}", 404)


def toxic_not_found(name: str) -> ApiError:
    return ApiError(f"toxic not found: {name}", 404)


def decode_json(raw: bytes | str) -> Any:
    """Parse a request body; an empty body is an empty object, like Go's decoder on {}."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise bad_request(f"not UTF-8 ({e.reason})") from e
    if not raw.strip():
        raise bad_request("EOF")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise bad_request(f"invalid JSON ({e})") from e


def _as_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _int_attr(toxic_type: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{toxic_type} attribute {key}={value!r} is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise bad_request(f"{toxic_type} attribute {key}={value!r} is not an integer")
    number = int(value)
    if number < 0:
        raise bad_request(f"{toxic_type} attribute {key}={number} must not be negative")
    if number > _MAX_ATTR:
        raise bad_request(f"{toxic_type} attribute {key}={number} is too large")
    return number


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"toxicity={value!r} is not a number")
    if not 0.0 <= float(value) <= 1.0:
        raise bad_request(f"toxicity={value!r} must be between 0 and 1")
    return float(value)


def _check_attributes(toxic_type: str, attrs: dict[str, int]) -> None:
    if toxic_type == "slicer":
        if attrs["average_size"] < 1:
            raise bad_request("slicer attribute average_size must be at least 1")
        if attrs["size_variation"] >= attrs["average_size"]:
            raise bad_request("slicer attribute size_variation must be below average_size")


@dataclass(eq=False)
class Toxic:
    """One toxic of a proxy; identity matters, live links keep per-toxic state by it."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_json(cls, body: Any) -> Toxic:
        """Build a toxic from an API body, with Toxiproxy's defaults and error codes."""
        body = _as_object(body, "toxic")
        toxic_type = body.get("type", "")
        stream = body.get("stream", "downstream")
        if not isinstance(stream, str) or stream not in STREAMS:
            raise ApiError("stream was invalid, can be either upstream or downstream", 400)
        if not isinstance(toxic_type, str) or toxic_type not in TOXIC_ATTRIBUTES:
            raise ApiError(f"invalid toxic type: {toxic_type!r}", 400)
        name = body.get("name") or f"{toxic_type}_{stream}"
        if not isinstance(name, str):
            raise bad_request(f"name={name!r} is not a string")
        toxicity = _toxicity(body.get("toxicity", 1.0))
        raw = body.get("attributes")
        attrs = dict(TOXIC_ATTRIBUTES[toxic_type])
        attrs.update(_parse_attributes(toxic_type, raw))
        _check_attributes(toxic_type, attrs)
        return cls(name, toxic_type, stream, toxicity, attrs)

    def updated(self, body: Any) -> tuple[float, dict[str, int]]:
        """Validate an update body; return the new toxicity and attributes (not applied)."""
        body = _as_object(body, "toxic")
        toxicity = _toxicity(body["toxicity"]) if "toxicity" in body else self.toxicity
        attrs = dict(self.attributes)
        attrs.update(_parse_attributes(self.type, body.get("attributes")))
        _check_attributes(self.type, attrs)
        return toxicity, attrs


def _parse_attributes(toxic_type: str, raw: Any) -> dict[str, int]:
    raw = _as_object({} if raw is None else raw, "attributes")
    known = TOXIC_ATTRIBUTES[toxic_type]
    # unknown keys are ignored, as Go's decoder does
    return {k: _int_attr(toxic_type, k, v) for k, v in raw.items() if k in known}


def parse_address(value: Any, what: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); an empty host means all interfaces."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"{what} address {value!r} is not a host:port string")
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ApiError(f"invalid {what} address {value!r}: expected host:port", 400)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as e:
            raise ApiError(f"invalid {what} address {value!r}: {e}", 400) from e
    elif ":" in host or any(c.isspace() for c in host) or "\x00" in host:
        raise ApiError(f"invalid {what} address {value!r}: bad host", 400)
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def slice_offsets(size: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """Cut points splitting ``size`` bytes into pieces of ``average`` ± ``variation`` bytes.

    Halves recursively (as Toxiproxy's slicer does) so pieces vary evenly, without a
    tendency to a small piece at either end; iterative to survive large chunks.
    """
    cuts: list[int] = []
    stack = [(0, size)]
    while stack:
        start, end = stack.pop()
        if (end - start) - average <= variation:
            cuts.append(end)
            continue
        shift = rng.randint(-variation, variation) if variation else 0
        mid = start + (end - start) // 2 + shift
        stack.append((mid, end))
        stack.append((start, mid))
    return cuts
