"""Benchmark of chaoskit's embedded Toxiproxy server against a direct loopback connection.

Run: ``.venv/bin/python bench/proxy.py`` (about half a minute).  It starts
``chaoskit proxy serve`` and the upstream servers as separate processes, as in real
use, and measures from this process:

1. bulk transfer through the proxy vs direct: throughput ratio (target >= 0.5);
2. small request/response over 100 concurrent connections: added latency p50
   (target <= 0.3 ms) and p99;
3. the latency toxic's accuracy: measured added delay vs the value set (target ±2 ms).

Direct and proxied measurements are interleaved (pairs of transfers, alternating
rounds, a plain and a toxic proxy side by side) so that load from other processes on
the machine hits both alike.  Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

BULK_BYTES = 512 << 20
PAIRS = 5
BLOCK = 1 << 20
CONNECTIONS = 100
ROUNDS = 40
MESSAGE = b"m" * 64
LATENCIES_MS = (5, 20, 50)


# -- upstream servers (run as child processes via --serve) -----------------------------------
def _serve(kind: str) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(sock.getsockname()[1], flush=True)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if s is sock:
                conn, _ = sock.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                n = s.recv_into(buf)
            except OSError:
                n = 0
            if not n:
                sel.unregister(s)
                s.close()
            elif kind == "echo":
                s.sendall(view[:n])


def _spawn_server(kind: str, stack: ExitStack) -> int:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE,
                            text=True)
    stack.callback(_stop, proc)
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def _spawn_proxy(stack: ExitStack) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "chaoskit.cli", "proxy", "serve",
                             "--port", "0", "--seed", "1"], stdout=subprocess.PIPE, text=True)
    stack.callback(_stop, proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if not match:
        raise SystemExit(f"proxy serve did not start: {line!r}")
    return match.group(1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _api(url: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _proxy(url: str, name: str, port: int) -> int:
    answer = _api(url, "POST", "/proxies", {"name": name, "upstream": f"127.0.0.1:{port}",
                                            "listen": "127.0.0.1:0"})
    assert isinstance(answer, dict)
    return int(answer["listen"].rsplit(":", 1)[1])


# -- 1. bulk throughput ---------------------------------------------------------------------
def bulk(port: int, total: int = BULK_BYTES) -> float:
    """Bytes/s sending ``total`` bytes to the sink on ``port`` (until the sink closes)."""
    block = b"b" * BLOCK
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.perf_counter()
        sent = 0
        while sent < total:
            conn.sendall(block)
            sent += len(block)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the sink closes once it has read everything
        return total / (time.perf_counter() - start)


# -- 2. small request/response with 100 concurrent connections --------------------------
def _exchange(c: socket.socket) -> float:
    start = time.perf_counter()
    c.sendall(MESSAGE)
    got = 0
    while got < len(MESSAGE):
        got += len(c.recv(4096))
    return time.perf_counter() - start


def round_trips(direct_port: int, proxy_port: int) -> tuple[list[float], list[float]]:
    """RTTs over 100 open connections each way, rounds interleaved so load drift cancels."""
    sides = []
    for port in (direct_port, proxy_port):
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
        for c in conns:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sides.append(conns)
    samples: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(ROUNDS):
            for conns, into in zip(sides, samples, strict=True):
                for c in conns:
                    rtt = _exchange(c)
                    if i:  # the first round warms up every connection
                        into.append(rtt)
        return samples
    finally:
        for conns in sides:
            for c in conns:
                c.close()


def burst(port: int, rounds: int = 20) -> list[float]:
    """All 100 connections send at once; each answer's latency (a loaded proxy)."""
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    samples: list[float] = []
    try:
        for c in conns:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(rounds + 1):
            barrier = threading.Barrier(CONNECTIONS)
            into = samples if i else []  # round 0 warms up every connection

            def one(c: socket.socket, barrier: threading.Barrier, into: list[float]) -> None:
                barrier.wait()
                start = time.perf_counter()
                c.sendall(MESSAGE)
                got = 0
                while got < len(MESSAGE):
                    got += len(c.recv(4096))
                into.append(time.perf_counter() - start)

            threads = [threading.Thread(target=one, args=(c, barrier, into)) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return samples
    finally:
        for c in conns:
            c.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 3. latency toxic accuracy -----------------------------------------------------------
def added_delay(plain_port: int, toxic_port: int, pairs: int = 25) -> float:
    """Median over interleaved pairs of (RTT with the toxic - RTT without): drift-free."""
    with socket.create_connection(("127.0.0.1", plain_port)) as a, \
            socket.create_connection(("127.0.0.1", toxic_port)) as b:
        for c in (a, b):
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _exchange(a), _exchange(b)  # warm up
        return statistics.median(_exchange(b) - _exchange(a) for _ in range(pairs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["sink", "echo"], help=argparse.SUPPRESS)
    parser.add_argument("--bulk-mib", type=int, default=BULK_BYTES >> 20)
    args = parser.parse_args()
    if args.serve:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        _serve(args.serve)
        return 0
    total = args.bulk_mib << 20
    ok = True
    with ExitStack() as stack:
        url = _spawn_proxy(stack)
        sink = _spawn_server("sink", stack)
        echo = _spawn_server("echo", stack)
        sink_proxy = _proxy(url, "sink", sink)
        echo_proxy = _proxy(url, "echo", echo)
        print(f"chaoskit proxy bench — Python {sys.version.split()[0]}, API {url}")

        bulk(sink, 64 << 20), bulk(sink_proxy, 64 << 20)  # warm up
        pairs = [(bulk(sink, total), bulk(sink_proxy, total)) for _ in range(PAIRS)]
        direct = statistics.median(d for d, _ in pairs)
        proxied = statistics.median(p for _, p in pairs)
        ratio = statistics.median(p / d for d, p in pairs)  # interleaved: fair under load
        ok &= ratio >= 0.5
        print(f"bulk {args.bulk_mib} MiB, {PAIRS} interleaved pairs (median): direct "
              f"{direct / 1e6:7.1f} MB/s, proxied {proxied / 1e6:7.1f} MB/s, "
              f"ratio {ratio:.2f} (target >= 0.5) {'PASS' if ratio >= 0.5 else 'FAIL'}")

        base, through = round_trips(echo, echo_proxy)
        added50 = (statistics.median(through) - statistics.median(base)) * 1000
        added99 = (pct(through, 0.99) - pct(base, 0.99)) * 1000
        ok &= added50 <= 0.3
        print(f"request/response, {CONNECTIONS} connections x {ROUNDS - 1} rounds: direct p50 "
              f"{statistics.median(base) * 1e3:.3f} ms p99 {pct(base, 0.99) * 1e3:.3f} ms; "
              f"proxied p50 {statistics.median(through) * 1e3:.3f} ms "
              f"p99 {pct(through, 0.99) * 1e3:.3f} ms")
        print(f"  added latency p50 {added50:.3f} ms (target <= 0.3) "
              f"{'PASS' if added50 <= 0.3 else 'FAIL'}, p99 {added99:.3f} ms")
        b_direct, b_proxy = burst(echo), burst(echo_proxy)
        print(f"  burst (all {CONNECTIONS} at once, info): direct p50 "
              f"{statistics.median(b_direct) * 1e3:.2f} ms p99 {pct(b_direct, .99) * 1e3:.2f} ms;"
              f" proxied p50 {statistics.median(b_proxy) * 1e3:.2f} ms "
              f"p99 {pct(b_proxy, .99) * 1e3:.2f} ms")

        lat_proxy = _proxy(url, "echo_lat", echo)
        for ms in LATENCIES_MS:
            _api(url, "POST", "/proxies/echo_lat/toxics",
                 {"name": "lat", "type": "latency", "attributes": {"latency": ms}})
            measured = added_delay(echo_proxy, lat_proxy) * 1000
            _api(url, "DELETE", "/proxies/echo_lat/toxics/lat")
            good = abs(measured - ms) <= 2.0
            ok &= good
            print(f"latency toxic {ms:3d} ms: measured added {measured:7.3f} ms "
                  f"(error {measured - ms:+.3f}, target ±2) {'PASS' if good else 'FAIL'}")
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
