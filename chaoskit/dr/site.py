"""The DR site: an append-only HTTP store for a backup repository's files, off the primary.

The primary's backup repository is a directory of immutable, content-named, encrypted
files (config, keys, data packs, index files, snapshots); the replicator
(:mod:`chaoskit.dr.replication`) ships them here over the network, so the DR site is a
complete repository that ``chaoskit backup`` opens directly.  Like restic's rest-server
in ``--append-only`` mode it never deletes or overwrites: a compromised or confused
primary cannot destroy the off-site copy.  Every request needs the bearer token from
``--token-file``.

    python -m chaoskit.dr.site --root DIR --token-file FILE [--host H] [--port P]

``GET /health`` (no token) · ``GET /files`` (JSON list of paths) ·
``GET /files/<path>`` · ``PUT /files/<path>`` with ``X-Content-SHA256``: 201 when
stored, 200 when the same bytes are already there, 409 when other bytes are.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from chaoskit.atomic import atomic_write_bytes

FILES = "/files"
_NAME = r"[0-9a-f]{8,64}"
ALLOWED_PATH = re.compile(
    rf"config|keys/{_NAME}|index/{_NAME}|snapshots/{_NAME}|data/[0-9a-f]{{2}}/{_NAME}"
)
"""The repository files the DR site accepts: nothing else can be written through it."""
MAX_BODY = 256 << 20


def repository_files(root: Path) -> list[str]:
    """Relative paths of the repository files under *root* (temporary files excluded)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "locks" and not d.startswith(".")]
        for name in filenames:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if ALLOWED_PATH.fullmatch(rel):
                found.append(rel)
    return sorted(found)


class SiteHandler(BaseHTTPRequestHandler):
    server: SiteServer
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, int) and code >= 400:  # the log holds refusals, not every upload
            super().log_request(code, size)

    def _answer(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._answer(status, json.dumps({"error": message, "status": status}).encode())

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if hmac.compare_digest(given, self.server.token):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")
        return False

    def _path(self) -> str | None:
        rel = self.path.removeprefix(FILES + "/")
        if not self.path.startswith(FILES + "/") or not ALLOWED_PATH.fullmatch(rel):
            self._error(HTTPStatus.NOT_FOUND, f"not a repository file: {self.path!r}")
            return None
        return rel

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/health":
            self._answer(HTTPStatus.OK, b'{"status":"ok"}')
            return
        if not self._authorized():
            return
        if self.path == FILES:
            self._answer(HTTPStatus.OK, json.dumps(repository_files(self.server.root)).encode())
            return
        rel = self._path()
        if rel is None:
            return
        try:
            data = (self.server.root / rel).read_bytes()
        except FileNotFoundError:
            self._error(HTTPStatus.NOT_FOUND, f"no such file: {rel}")
            return
        self._answer(HTTPStatus.OK, data, "application/octet-stream")

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        try:
            length = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._error(HTTPStatus.LENGTH_REQUIRED, f"Content-Length {length} not in 0..{MAX_BODY}")
            return
        data = self.rfile.read(length)
        if not self._authorized():
            return
        rel = self._path()
        if rel is None:
            return
        if len(data) != length:
            self._error(HTTPStatus.BAD_REQUEST, f"body cut short: {len(data)} of {length} bytes")
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.headers.get("X-Content-SHA256"):
            self._error(HTTPStatus.BAD_REQUEST, f"{rel}: body does not match X-Content-SHA256")
            return
        target = self.server.root / rel
        with self.server.write_lock:
            if target.exists():
                same = hashlib.sha256(target.read_bytes()).hexdigest() == digest
                if same:
                    self._answer(HTTPStatus.OK, b'{"stored":false}')
                else:
                    self._error(HTTPStatus.CONFLICT, f"{rel} exists with other content")
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        self._answer(HTTPStatus.CREATED, b'{"stored":true}')


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, token: bytes, host: str = "127.0.0.1", port: int = 0):
        self.root = root
        self.token = token
        self.write_lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        super().__init__((host, port), SiteHandler)


def read_token(path: Path) -> bytes:
    token = path.read_bytes().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaoskit.dr.site", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        server = SiteServer(args.root, read_token(args.token_file), args.host, args.port)
    except (OSError, ValueError) as e:
        print(f"dr-site: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"dr-site: serving {args.root} on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
