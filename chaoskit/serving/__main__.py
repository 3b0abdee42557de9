"""``python -m chaoskit.serving``: chaoskit's reference model server.

Order of start-up, chosen for a short and observable cold start: check the options,
bind the port (a port in use fails within milliseconds, before the ~3 s TensorFlow
import), write the port file, answer HTTP at once (status 404/503 until a version has
loaded), then import TensorFlow, answer gRPC (``--grpc-port``; its stubs need TensorFlow) and load
the newest version.  A gRPC port in use is found before the import too.  Exit status: 0 after
SIGTERM/SIGINT, 2 for a user error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROG = "chaoskit-serving"


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG, description="Serve a SavedModel over TF Serving's REST (and gRPC) API."
    )
    p.add_argument("--model-name", required=True)
    p.add_argument("--model-base-path", required=True, type=Path)
    p.add_argument("--rest-port", required=True, type=int, help="0 picks a free port")
    p.add_argument(
        "--grpc-port", type=int, default=None,
        help="also serve TF Serving's gRPC API here (0 picks a free port; default: no gRPC)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--port-file", type=Path, default=None, help="write the bound port here")
    p.add_argument(
        "--tf-threads", type=int, default=2, help="TF intra/inter-op threads (default 2)"
    )
    p.add_argument(
        "--model-config-file",
        type=Path,
        default=None,
        help="JSON: model_version_policy and version_labels (see chaoskit.serving.config)",
    )
    p.add_argument(
        "--model-config-file-poll-wait-seconds",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="re-read the model config file this often (0, the default: only at start-up)",
    )
    args = p.parse_args(argv)
    if not 0 <= args.rest_port <= 65535:
        p.error(f"--rest-port must be 0..65535, got {args.rest_port}")
    if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
        p.error(f"--grpc-port must be 0..65535, got {args.grpc_port}")
    if args.poll_interval <= 0:
        p.error(f"--poll-interval must be > 0, got {args.poll_interval}")
    if args.model_config_file_poll_wait_seconds < 0:
        wait = args.model_config_file_poll_wait_seconds
        p.error(f"--model-config-file-poll-wait-seconds must be >= 0, got {wait}")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    base = args.model_base_path
    if not base.is_dir():
        return _fail(f"model base path {base} does not exist")

    from chaoskit.atomic import atomic_write_text
    from chaoskit.errors import ConfigError
    from chaoskit.journal import Journal
    from chaoskit.serving.config import ConfigWatcher, ServingConfig, read_config
    from chaoskit.serving.server import ServingHTTPServer
    from chaoskit.serving.store import ModelStore
    from chaoskit.signals import StopSignals

    config = ServingConfig()
    if args.model_config_file is not None:
        try:  # the policy applies at once, the labels once their versions have loaded
            config = ServingConfig(read_config(args.model_config_file)[1].policy)
        except ConfigError as e:
            return _fail(str(e))
        except OSError as e:
            return _fail(f"cannot read model config {args.model_config_file}: {e.strerror or e}")
    journal = Journal.from_env(source="serving")
    store = ModelStore(args.model_name, base.resolve(), journal, config=config)
    try:
        httpd = ServingHTTPServer((args.host, args.rest_port), store)
    except OSError as e:
        return _fail(_listen_error(args.host, args.rest_port, e))
    if args.grpc_port:  # refused now, not after the ~3 s TensorFlow import
        try:
            _check_free(args.host, args.grpc_port)
        except OSError as e:
            httpd.server_close()
            return _fail(_listen_error(args.host, args.grpc_port, e))
    port = int(httpd.server_address[1])
    stop = threading.Event()

    def on_stop() -> None:
        stop.set()
        store.wake.set()

    grpc_server: Any = None
    StopSignals(on_stop).start()  # before any thread starts: see chaoskit.signals
    http_thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    )
    http_thread.start()
    if args.model_config_file is not None:
        watcher = ConfigWatcher(args.model_config_file, store.apply_config, _reporter(journal))
        threading.Thread(
            target=_watch,
            args=(
                watcher,
                store,
                stop,
                args.model_config_file_poll_wait_seconds,
                args.poll_interval,
            ),
            name="model-config",
            daemon=True,
        ).start()
    try:
        if args.port_file is not None:
            atomic_write_text(args.port_file, f"{port}\n", durable=False)
        if journal is not None:
            journal.record("serving.started", port=port, pid=os.getpid())
        if not stop.is_set():
            from chaoskit.model import import_tensorflow

            import_tensorflow(threads=max(1, args.tf_threads), lean=True)
        if args.grpc_port is not None and not stop.is_set():
            from chaoskit.serving import grpc_api

            grpc_server, grpc_port = grpc_api.start(store, httpd.metrics, args.host,
                                                    args.grpc_port, _reporter(journal))  # fmt: skip
            if journal is not None:
                journal.record("serving.grpc_started", port=grpc_port, pid=os.getpid())
        store.run(stop, args.poll_interval)
    except OSError as e:
        return _fail(str(e))
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=0)
        httpd.shutdown()
        httpd.server_close()
        if journal is not None:
            journal.close()
    return 0


def _listen_error(host: str, port: int, e: OSError) -> str:
    where = f"{host}:{port}"
    if e.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: address already in use"
    if isinstance(e, PermissionError):
        return f"cannot listen on {where}: permission denied"
    return f"cannot listen on {where}: {e.strerror or e}"


def _check_free(host: str, port: int) -> None:
    """OSError when *port* cannot be listened on (gRPC binds it later, after TensorFlow)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)


def _reporter(journal: Any) -> Callable[[str, dict[str, Any]], None]:
    """Config changes and refusals go to the journal and, refusals, to stderr."""

    def report(event: str, fields: dict[str, Any]) -> None:
        if event == "serving.config_refused":
            print(f"{PROG}: model config refused: {fields['error']}", file=sys.stderr, flush=True)
        if journal is not None:
            journal.record(event, **fields)

    return report


def _watch(watcher: Any, store: Any, stop: threading.Event, poll_wait: float, retry: float) -> None:
    """The config file's labels can only name loaded versions: start after the first poll."""
    while not store.polled.wait(0.1):
        if stop.is_set():
            return
    watcher.run(stop, poll_wait, retry)


if __name__ == "__main__":
    sys.exit(main())
