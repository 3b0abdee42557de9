"""DR-site shipping throughput over HTTPS (pinned certificate) against plain HTTP, side
by side in one run (issue "Security of the DR engine": TLS >= 50 % of plain HTTP).

Two DR sites on loopback, one plain and one TLS, each receive the same pack-sized
uploads (16 MiB of random bytes, as the repository writes packs) through SiteClient,
interleaved; MB/s is the median over ``--rounds`` rounds of ``--files`` uploads each.

    .venv/bin/python bench/site_tls.py [--rounds 5] [--files 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from chaoskit.dr.protect.replication import SiteClient
from chaoskit.dr.protect.site import SiteServer
from chaoskit.dr.protect.site_tls import make_certificate, server_context

TOKEN = b"bench-token"
PACK = 16 << 20


def serve(server: SiteServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


def ship(client: SiteClient, blobs: list[bytes], round_no: int) -> float:
    """MB/s of uploading *blobs* as fresh pack files."""
    started = time.perf_counter()
    for i, blob in enumerate(blobs):
        client.put(f"data/{i:02x}/{round_no:08x}{i:056x}", blob)
    return len(blobs) * PACK / (time.perf_counter() - started) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaoskit-tls-bench-") as tmp:
        cert, key, pin = make_certificate(Path(tmp) / "tls", ["127.0.0.1"])
        plain = SiteServer(Path(tmp) / "plain", TOKEN)
        tls = SiteServer(Path(tmp) / "tls-site", TOKEN, tls=server_context(cert, key))
        threads = [serve(plain), serve(tls)]
        try:
            clients = {
                "http": SiteClient(plain.server_address[:2], TOKEN, timeout=30),  # type: ignore[arg-type]
                "https": SiteClient(tls.server_address[:2], TOKEN, timeout=30, tls_pin=pin),  # type: ignore[arg-type]
            }
            blobs = [os.urandom(PACK) for _ in range(args.files)]
            rates: dict[str, list[float]] = {"http": [], "https": []}
            for r in range(args.rounds):
                order = ["http", "https"] if r % 2 == 0 else ["https", "http"]
                for name in order:
                    rates[name].append(ship(clients[name], blobs, r))
        finally:
            for server in (plain, tls):
                server.shutdown()
                server.server_close()
            for thread in threads:
                thread.join()
    http_mbs, https_mbs = statistics.median(rates["http"]), statistics.median(rates["https"])
    ratio = https_mbs / http_mbs
    for label, name, median in (("plain HTTP", "http", http_mbs), ("HTTPS", "https", https_mbs)):
        each = ", ".join(f"{x:.0f}" for x in rates[name])
        print(f"{label:<11} {median:8.0f} MB/s   (rounds: {each})")
    print(f"ratio {ratio:.2f} (target >= 0.50)")
    return 0 if ratio >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
