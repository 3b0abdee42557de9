"""An embedded Toxiproxy-compatible server and a client for any Toxiproxy API.

Toxiproxy's own server is a Go binary that the package registries do not carry, so
chaoskit serves the same HTTP API itself (``chaoskit proxy serve`` or
:class:`ProxyServer` in-process); a real toxiproxy-server is used instead when
``$TOXIPROXY_URL`` names one.  Names are imported lazily so that the CLI, which
imports ``chaoskit.proxy.cli``, stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaoskit.proxy.client import TOXIPROXY_URL_ENV, ToxiproxyAPI
    from chaoskit.proxy.model import ApiError
    from chaoskit.proxy.server import ProxyServer, use_toxiproxy

__all__ = ["TOXIPROXY_URL_ENV", "ApiError", "ProxyServer", "ToxiproxyAPI", "use_toxiproxy"]

_WHERE = {
    "TOXIPROXY_URL_ENV": "chaoskit.proxy.client",
    "ToxiproxyAPI": "chaoskit.proxy.client",
    "ApiError": "chaoskit.proxy.model",
    "ProxyServer": "chaoskit.proxy.server",
    "use_toxiproxy": "chaoskit.proxy.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'chaoskit.proxy' has no attribute {name!r}")
