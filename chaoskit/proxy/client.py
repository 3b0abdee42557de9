"""ToxiproxyAPI: a small, dependency-free client for any Toxiproxy HTTP API.

Faults and experiments use it to drive either chaoskit's embedded server or a real
toxiproxy-server (named by ``$TOXIPROXY_URL``).  Non-2xx answers become
:class:`~chaoskit.proxy.model.ApiError` carrying the status, so callers can tell
"already gone" (404) from real failures; an unreachable server is a ``ProxyError``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from chaoskit.errors import ConfigError, ProxyError
from chaoskit.proxy.model import ApiError

TOXIPROXY_URL_ENV = "TOXIPROXY_URL"
DEFAULT_TIMEOUT = 10.0


def normalize_url(url: str) -> str:
    """``host:port`` or ``http://host:port/`` → ``http://host:port``."""
    url = url.strip().rstrip("/")
    if not url:
        raise ConfigError("empty Toxiproxy URL")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Toxiproxy URL {url!r} must be http:// or https://")
    return url


def toxic_body(
    type: str, stream: str, toxicity: float, attributes: dict[str, Any] | None, name: str | None
) -> dict[str, Any]:
    """The JSON of a toxic to create, as Toxiproxy's API takes it (shared by both clients)."""
    body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity,
                            "attributes": attributes or {}}  # fmt: skip
    if name:
        body["name"] = name
    return body


class ToxiproxyAPI:
    """The Toxiproxy API at ``url`` (default: ``$TOXIPROXY_URL``)."""

    def __init__(self, url: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        url = url or os.environ.get(TOXIPROXY_URL_ENV)
        if not url:
            raise ConfigError(f"no Toxiproxy URL given and ${TOXIPROXY_URL_ENV} is not set")
        self.url = normalize_url(url)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ToxiproxyAPI({self.url!r})"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; returns the decoded JSON answer (None for 204), raises ApiError."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", "chaoskit")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace").strip() or e.reason
            raise ApiError(f"{method} {path}: {message}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ProxyError(f"cannot reach Toxiproxy at {self.url}: {reason}") from e
        if not raw:
            return None
        if "json" not in ctype:
            return raw.decode("utf-8", "replace")
        return json.loads(raw)

    # -- proxies -------------------------------------------------------------------------
    def version(self) -> str:
        answer = self.request("GET", "/version")
        return answer["version"] if isinstance(answer, dict) else str(answer).strip()

    def proxies(self) -> dict[str, dict[str, Any]]:
        return self.request("GET", "/proxies")  # type: ignore[no-any-return]

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0",
                     enabled: bool = True) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        return self.request("POST", "/proxies", body)  # type: ignore[no-any-return]

    def populate(self, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.request("POST", "/populate", proxies)["proxies"]  # type: ignore[no-any-return]

    def get_proxy(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/proxies/{_q(name)}")  # type: ignore[no-any-return]

    def update_proxy(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.request("POST", f"/proxies/{_q(name)}", fields)  # type: ignore[no-any-return]

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        return self.update_proxy(name, enabled=enabled)

    def delete_proxy(self, name: str) -> None:
        self.request("DELETE", f"/proxies/{_q(name)}")

    def reset(self) -> None:
        self.request("POST", "/reset")

    def metrics(self) -> str:
        return str(self.request("GET", "/metrics"))

    # -- toxics --------------------------------------------------------------------------
    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/proxies/{_q(proxy)}/toxics")  # type: ignore[no-any-return]

    def add_toxic(self, proxy: str, type: str, *, stream: str = "downstream",
                  toxicity: float = 1.0, attributes: dict[str, Any] | None = None,
                  name: str | None = None) -> dict[str, Any]:
        body = toxic_body(type, stream, toxicity, attributes, name)
        path = f"/proxies/{_q(proxy)}/toxics"
        return self.request("POST", path, body)  # type: ignore[no-any-return]

    def get_toxic(self, proxy: str, name: str) -> dict[str, Any]:
        path = f"/proxies/{_q(proxy)}/toxics/{_q(name)}"
        return self.request("GET", path)  # type: ignore[no-any-return]

    def update_toxic(self, proxy: str, name: str, **fields: Any) -> dict[str, Any]:
        path = f"/proxies/{_q(proxy)}/toxics/{_q(name)}"
        return self.request("POST", path, fields)  # type: ignore[no-any-return]

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.request("DELETE", f"/proxies/{_q(proxy)}/toxics/{_q(name)}")


def _q(segment: str) -> str:
    return quote(segment, safe="")
