"""``GET /metrics``: proxy counters in the Prometheus text exposition format.

Byte counters carry Toxiproxy's metric names and labels so dashboards built for a
real toxiproxy-server keep working; connection counters are chaoskit's own.
"""

from __future__ import annotations

from collections.abc import Iterable

from chaoskit.proxy.model import STREAMS
from chaoskit.proxy.registry import Proxy

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def render(proxies: Iterable[Proxy]) -> str:
    """The whole exposition for the given proxies, sorted by name for stable output."""
    ordered = sorted(proxies, key=lambda p: p.name)
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {value:g}" for labels, value in samples)

    def directional(counter: str) -> list[tuple[str, float]]:
        return [
            (_labels(direction=s, listener=p.listen, proxy=p.name, upstream=p.upstream),
             getattr(p, counter)[s])
            for p in ordered for s in STREAMS
        ]

    family("toxiproxy_proxy_received_bytes_total", "counter",
           "Bytes received by the proxy, per direction.", directional("rx"))
    family("toxiproxy_proxy_sent_bytes_total", "counter",
           "Bytes sent by the proxy after its toxics, per direction.", directional("tx"))
    family("chaoskit_proxy_connections_total", "counter", "Client connections accepted.",
           [(_labels(proxy=p.name), p.connections_total) for p in ordered])
    family("chaoskit_proxy_active_connections", "gauge", "Client connections open now.",
           [(_labels(proxy=p.name), len(p.connections)) for p in ordered])
    family("chaoskit_proxy_upstream_failures_total", "counter",
           "Connections closed because the upstream could not be reached.",
           [(_labels(proxy=p.name), p.upstream_failures) for p in ordered])
    family("chaoskit_proxy_enabled", "gauge", "1 when the proxy listens.",
           [(_labels(proxy=p.name), int(p.enabled)) for p in ordered])
    family("chaoskit_proxy_toxics", "gauge", "Toxics configured on the proxy.",
           [(_labels(proxy=p.name), len(p.toxics)) for p in ordered])
    return "\n".join(lines) + "\n"
