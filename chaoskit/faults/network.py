"""Network faults through a Toxiproxy API: partitions and degraded links between services.

Each fault acts on one proxy, named by its Toxiproxy name, of chaoskit's embedded
server or of a real toxiproxy-server.  The API is found in this order: the fault's
``api`` field, ``$TOXIPROXY_URL``, then ``ctx.stack.toxiproxy_url``.

Toxic faults add toxics with a name unique to the injection (``chaoskit-<kind>-...``),
so revert removes exactly those and never a toxic someone else added; revert tolerates
the toxic or the whole proxy being gone already.  If injecting fails or is interrupted
(Ctrl-C) half-way, the toxics already added are removed before the error propagates,
so none is orphaned.  A proxy name the API does not know is a ``FaultError`` listing
the proxies it has (no client traceback: the fix is the name).  Durations follow
chaoskit's convention (numbers are seconds, strings may carry a unit: ``"150ms"``);
Toxiproxy's integer milliseconds are derived.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from chaoskit.durations import parse_duration
from chaoskit.errors import ConfigError, FaultError, ProxyError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.proxy.client import TOXIPROXY_URL_ENV, ToxiproxyAPI
from chaoskit.proxy.model import ApiError
from chaoskit.stack.gateway import GRPC_LINK_SUFFIX

TOXIC_PREFIX = "chaoskit-"
"""Every toxic a fault adds is named with this prefix (see :func:`remove_fault_toxics`)."""

Duration = float | str

_STREAMS = {"upstream": ("upstream",), "downstream": ("downstream",),
            "both": ("upstream", "downstream")}


def _ms(value: Duration | None, what: str) -> int:
    return 0 if value is None else round(parse_duration(value, what=what) * 1000)


def _non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be a non-negative integer, not {value!r}")
    return value


def api_url(field_value: str | None, ctx: FaultContext) -> str:
    """The Toxiproxy API to use: the fault's field, $TOXIPROXY_URL, then the stack's."""
    url = field_value or os.environ.get(TOXIPROXY_URL_ENV) \
        or getattr(ctx.stack, "toxiproxy_url", None)
    if not url:
        raise FaultError(
            f"no Toxiproxy API: give the fault api=..., set ${TOXIPROXY_URL_ENV}, "
            "or use a stack with a toxiproxy_url")
    return str(url)


def _gone(error: ApiError) -> bool:
    return error.status == 404


def _no_such_proxy(api: ToxiproxyAPI, kind: str, proxy: str) -> FaultError:
    """A mistyped proxy name, said with the proxies that exist (the user's fix is a name)."""
    try:
        listed = ", ".join(sorted(api.proxies())) or "none"
    except ProxyError as e:
        listed = f"unknown: {e}"
    return FaultError(f"{kind}: no proxy {proxy!r} at {api.url} (proxies there: {listed})")


class _Linked(ToxiproxyAPI):
    """The Toxiproxy API at *url*, where what is done to *proxy* is also done to its
    companion (``<proxy>-grpc``: the gateway's proxy of the same replica's gRPC port,
    where a stack whose serving is probed over gRPC is probed): one link, both protocols."""

    def __init__(self, url: str, proxy: str) -> None:
        super().__init__(url)
        self.proxy = proxy
        companion = f"{proxy}{GRPC_LINK_SUFFIX}"
        try:
            self.companions = [companion] if companion in self.proxies() else []
        except ApiError:
            self.companions = []  # the primary's own call says what is wrong

    def _each(self, proxy: str) -> list[str]:
        return [proxy, *self.companions] if proxy == self.proxy else [proxy]

    def add_toxic(self, proxy: str, type: str, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        added = [super(_Linked, self).add_toxic(p, type, **kwargs) for p in self._each(proxy)]
        return added[0]

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._on_each(proxy, lambda p: super(_Linked, self).remove_toxic(p, name))

    def set_enabled(self, proxy: str, enabled: bool) -> dict[str, Any]:
        self._on_each(proxy, lambda p: super(_Linked, self).set_enabled(p, enabled))
        return {"name": proxy, "enabled": enabled}

    def _on_each(self, proxy: str, step: Callable[[str], object]) -> None:
        """*step* on every proxy of the link, even when one fails (the first error is
        raised afterwards): an undo must not stop halfway."""
        first: Exception | None = None
        for p in self._each(proxy):
            try:
                step(p)
            except Exception as e:  # noqa: BLE001 - raised below
                first = first or e
        if first is not None:
            raise first


@dataclass(frozen=True, kw_only=True)
class ProxyFault(Fault):
    """Base of faults acting on one Toxiproxy proxy."""

    kind: ClassVar[str] = "network"
    proxy: str = "serving"
    api: str | None = None


@dataclass(frozen=True, kw_only=True)
class ToxicFault(ProxyFault):
    """A fault made of one toxic per affected stream ("upstream", "downstream" or "both")."""

    toxic_type: ClassVar[str] = "noop"
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if self.stream not in _STREAMS:
            raise ConfigError(f"stream must be upstream, downstream or both, not {self.stream!r}")
        if isinstance(self.toxicity, bool) or not isinstance(self.toxicity, int | float) \
                or not 0.0 <= self.toxicity <= 1.0:
            raise ConfigError(f"toxicity must be between 0 and 1, not {self.toxicity!r}")
        self.attributes()  # validate the parameters at construction

    def attributes(self) -> dict[str, int]:
        return {}

    def _inject(self, ctx: FaultContext) -> Changes:
        url = api_url(self.api, ctx)
        api = _Linked(url, self.proxy)
        token = uuid.uuid4().hex[:10]
        planned = [(f"{TOXIC_PREFIX}{self.kind}-{s}-{token}", s) for s in _STREAMS[self.stream]]
        attributes = self.attributes()
        try:
            for name, stream in planned:
                api.add_toxic(self.proxy, self.toxic_type, stream=stream,
                              toxicity=self.toxicity, attributes=attributes, name=name)
        except BaseException as e:
            # also on Ctrl-C: the answer may have been lost after the server added it
            _remove_quietly(api, self.proxy, [n for n, _ in planned])
            if isinstance(e, ApiError) and _gone(e):
                raise _no_such_proxy(api, self.kind, self.proxy) from None
            raise
        names = [n for n, _ in planned]
        record = {"api": url, "proxy": self.proxy, "toxics": names, "type": self.toxic_type,
                  "attributes": attributes, "also": api.companions}  # fmt: skip
        return Changes(record=record, undo=(url, names))

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        url, names = changes.undo
        api = _Linked(url, self.proxy)
        _finish_despite_ctrl_c([functools.partial(_remove, api, self.proxy, n) for n in names])


def _remove(api: ToxiproxyAPI, proxy: str, name: str) -> None:
    try:
        api.remove_toxic(proxy, name)
    except ApiError as e:
        if not _gone(e):
            raise


def _finish_despite_ctrl_c(steps: list[Callable[[], None]]) -> None:
    """Run every undo step; a first Ctrl-C is held until they are done (no orphans)."""
    interrupted: KeyboardInterrupt | None = None
    pending = list(steps)
    while pending:
        try:
            pending[0]()
        except KeyboardInterrupt as e:
            if interrupted is not None:
                raise  # a second Ctrl-C: the user insists
            interrupted = e
            continue  # retry the interrupted step; removing twice is harmless
        pending.pop(0)
    if interrupted is not None:
        raise interrupted


def _remove_quietly(api: ToxiproxyAPI, proxy: str, names: list[str]) -> None:
    for name in names:
        try:
            api.remove_toxic(proxy, name)
        except Exception:  # noqa: S110 - best effort while another error propagates
            pass


@dataclass(frozen=True, kw_only=True)
class Latency(ToxicFault):
    """Delay data on the link by ``delay`` ± ``jitter``; revert removes the latency toxic."""

    kind: ClassVar[str] = "latency"
    toxic_type: ClassVar[str] = "latency"
    delay: Duration = "100ms"
    jitter: Duration = 0

    def attributes(self) -> dict[str, int]:
        return {"latency": _ms(self.delay, "latency delay"),
                "jitter": _ms(self.jitter, "latency jitter")}


@dataclass(frozen=True, kw_only=True)
class Bandwidth(ToxicFault):
    """Limit the link to ``rate_kbps`` kilobytes per second; revert removes the limit."""

    kind: ClassVar[str] = "bandwidth"
    toxic_type: ClassVar[str] = "bandwidth"
    rate_kbps: int = 100

    def attributes(self) -> dict[str, int]:
        return {"rate": _non_negative_int(self.rate_kbps, "bandwidth rate_kbps")}


@dataclass(frozen=True, kw_only=True)
class ResetPeer(ToxicFault):
    """Reset (TCP RST) each connection ``after`` its first data; revert stops the resets."""

    kind: ClassVar[str] = "reset_peer"
    toxic_type: ClassVar[str] = "reset_peer"
    after: Duration = 0

    def attributes(self) -> dict[str, int]:
        return {"timeout": _ms(self.after, "reset_peer after")}


@dataclass(frozen=True, kw_only=True)
class Slicer(ToxicFault):
    """Cut data into ``average_size`` ± ``size_variation`` byte pieces ``delay`` apart."""

    kind: ClassVar[str] = "slicer"
    toxic_type: ClassVar[str] = "slicer"
    average_size: int = 64
    size_variation: int = 16
    delay: Duration = "1ms"

    def attributes(self) -> dict[str, int]:
        average = _non_negative_int(self.average_size, "slicer average_size")
        variation = _non_negative_int(self.size_variation, "slicer size_variation")
        if average < 1 or variation >= average:
            raise ConfigError(
                f"slicer needs average_size >= 1 and size_variation < average_size, "
                f"not {average} and {variation}")
        micros = round(parse_duration(self.delay, what="slicer delay") * 1_000_000)
        return {"average_size": average, "size_variation": variation, "delay": micros}


@dataclass(frozen=True, kw_only=True)
class LimitData(ToxicFault):
    """Close each connection once ``bytes`` bytes went through; revert lifts the limit."""

    kind: ClassVar[str] = "limit_data"
    toxic_type: ClassVar[str] = "limit_data"
    bytes: int = 1024

    def attributes(self) -> dict[str, int]:
        return {"bytes": _non_negative_int(self.bytes, "limit_data bytes")}


@dataclass(frozen=True, kw_only=True)
class Partition(ProxyFault):
    """Cut the link.

    ``mode="refuse"``: the proxy is disabled, so connections are dropped and new ones
    refused (a crashed host or closed port); revert re-enables it if this fault disabled
    it.  ``mode="hang"``: a timeout toxic on both streams silently drops all data (a
    black-holed route), closing connections after ``close_after`` if given; revert
    removes the toxics.
    """

    kind: ClassVar[str] = "partition"
    mode: str = "refuse"
    close_after: Duration | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("refuse", "hang"):
            raise ConfigError(f"partition mode must be 'refuse' or 'hang', not {self.mode!r}")
        if self.mode == "refuse" and self.close_after is not None:
            raise ConfigError("close_after applies to partition mode 'hang' only")
        _ms(self.close_after, "partition close_after")

    def _hang(self) -> ToxicFault:
        return _Hang(proxy=self.proxy, api=self.api, stream="both",
                     timeout_ms=_ms(self.close_after, "partition close_after"))

    def _inject(self, ctx: FaultContext) -> Changes:
        if self.mode == "hang":
            changes = self._hang()._inject(ctx)
            changes.record["mode"] = "hang"
            return changes
        url = api_url(self.api, ctx)
        api = _Linked(url, self.proxy)
        try:
            was_enabled = bool(api.get_proxy(self.proxy).get("enabled", True))
        except ApiError as e:
            if _gone(e):
                raise _no_such_proxy(api, self.kind, self.proxy) from None
            raise
        if was_enabled:
            try:
                api.set_enabled(self.proxy, False)
            except BaseException:
                try:
                    api.set_enabled(self.proxy, True)
                except Exception:  # noqa: S110 - best effort while another error propagates
                    pass
                raise
        record = {"api": url, "proxy": self.proxy, "mode": "refuse", "disabled": was_enabled,
                  "also": api.companions}  # fmt: skip
        return Changes(record=record, undo=(url, was_enabled))

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        if self.mode == "hang":
            self._hang()._revert(ctx, changes)
            return
        url, disabled_by_us = changes.undo
        if not disabled_by_us:
            return

        def enable() -> None:
            try:
                _Linked(url, self.proxy).set_enabled(self.proxy, True)
            except ApiError as e:
                if not _gone(e):
                    raise

        _finish_despite_ctrl_c([enable])


@dataclass(frozen=True, kw_only=True)
class _Hang(ToxicFault):
    kind: ClassVar[str] = "partition"
    toxic_type: ClassVar[str] = "timeout"
    timeout_ms: int = 0

    def attributes(self) -> dict[str, int]:
        return {"timeout": self.timeout_ms}


def remove_fault_toxics(api: ToxiproxyAPI, proxy: str | None = None) -> list[str]:
    """Remove every toxic a chaoskit fault added (by name prefix), e.g. after a crash.

    Returns ``proxy/toxic`` for each one removed; toxics added by anyone else stay.
    """
    removed = []
    proxies = [proxy] if proxy else list(api.proxies())
    for name in proxies:
        try:
            toxics = api.toxics(name)
        except ApiError as e:
            if _gone(e):
                continue
            raise
        for toxic in toxics:
            if str(toxic.get("name", "")).startswith(TOXIC_PREFIX):
                try:
                    api.remove_toxic(name, toxic["name"])
                    removed.append(f"{name}/{toxic['name']}")
                except ApiError as e:
                    if not _gone(e):
                        raise
    return removed
