"""``chaoskit proxy serve``: run the embedded Toxiproxy-compatible server in the foreground.

Cheap to import: the server is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from chaoskit.signals import StopSignals


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "proxy", help="Toxiproxy-compatible network fault proxy",
        description="A server speaking Toxiproxy's HTTP API, embedded in chaoskit.")
    sub = parser.add_subparsers(dest="proxy_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _help(parser))
    serve = sub.add_parser("serve", help="serve the Toxiproxy API and its proxies until stopped")
    serve.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8474,
                       help="API port (default 8474; 0 picks a free one)")
    serve.add_argument("--config", metavar="FILE",
                       help="JSON list of proxies to create at start, as for POST /populate")
    serve.add_argument("--seed", type=int, default=None,
                       help="seed for toxicity draws and jitter, for reproducible runs")
    serve.set_defaults(func=_serve)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    from chaoskit.errors import ConfigError
    from chaoskit.proxy.server import ProxyServer

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port")
    server = ProxyServer(args.host, args.port, seed=args.seed, config=args.config)
    with StopSignals(server.stop):  # before the server's thread starts: chaoskit.signals
        server.start()
        print(f"chaoskit proxy: Toxiproxy API listening on {server.url}", flush=True)
        for name, proxy in sorted(server.proxies().items()):
            state = "" if proxy["enabled"] else " (disabled)"
            print(f"chaoskit proxy: {name}: {proxy['listen']} -> {proxy['upstream']}{state}",
                  flush=True)  # fmt: skip
        try:
            while not server.wait(0.5):
                pass
        finally:
            server.stop()
    return 0
