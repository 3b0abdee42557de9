"""The DR site: an append-only HTTP store for a backup repository's files, off the primary.

The primary's backup repository is a directory of immutable, content-named, encrypted
files (config, keys, data packs, index files, snapshots); the replicator
(:mod:`chaoskit.dr.protect.replication`) ships them here over the network, so the DR site is a
complete repository that ``chaoskit backup`` opens directly.  Like restic's rest-server
in ``--append-only`` mode it never deletes or overwrites: a compromised or confused
primary cannot destroy the off-site copy.  Every request needs
``Authorization: Bearer <token>`` with the token from ``--token-file``; it is checked
from the headers alone, before any body is read, so an unauthenticated client cannot make
the site read or allocate a large upload (a refused PUT gets 401 and its connection is
closed unread).  A body over ``--max-body`` bytes is refused with 413 the same way, a
client that sends nothing for ``--timeout`` seconds is disconnected, and a connection
beyond ``--max-connections`` served at once is closed at accept.

    python -m chaoskit.dr.protect.site --root DIR --token-file FILE [--host H] [--port P]
        [--max-body BYTES] [--timeout SECONDS] [--max-connections N]

``GET /health`` (no token) · ``GET /files`` (JSON list of paths) ·
``GET /files/<path>`` · ``PUT /files/<path>`` with ``X-Content-SHA256``: 201 when
stored, 200 when the same bytes are already there, 409 when other bytes are, 422 for an
audit entry that is not the next valid one of the chain ·
``GET /audit/witness``: the site's signed checkpoint of the audit log it holds
(:mod:`chaoskit.dr.protect.witness`) · ``DELETE /files/<path>``: an admin token only,
423 while the file is younger than the retention lock.

Tokens have roles (``--tokens``, lines of ``<role> <token>``; ``--token-file`` is the
writer's): a writer lists, reads and adds (the primary's replicator: append-only), a
reader lists and reads (a restore from the DR site), an admin may also delete, but with
``--retain 30d`` nothing younger than 30 days, as a vault lock in compliance mode.  A
token of the wrong role gets 403; every refusal is audited.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from chaoskit.atomic import atomic_write_bytes, fsync_dir
from chaoskit.dr.protect.witness import Witness
from chaoskit.durations import format_duration, parse_duration
from chaoskit.errors import ConfigError
from chaoskit.http_server import QuietHTTPServer

FILES = "/files"
WITNESS = "/audit/witness"
_NAME = r"[0-9a-f]{8,64}"
ALLOWED_PATH = re.compile(
    rf"config|keys/{_NAME}|index/{_NAME}|snapshots/{_NAME}|data/[0-9a-f]{{2}}/{_NAME}"
    r"|audit/\d{12}\.json"
)
"""The repository files the DR site accepts: nothing else can be written through it."""
SITE_ROLES = {
    "writer": frozenset({"read", "write"}),  # the primary's replicator: append-only
    "reader": frozenset({"read"}),  # a restore from the DR site
    "admin": frozenset({"read", "write", "delete"}),  # pruning, under the retention lock
}
"""What each token role may do; no role may overwrite a file."""
MAX_BODY = 256 << 20
"""Default request-size limit: well above a pack (16 MiB) or an index file."""
MAX_CONNECTIONS = 64
"""Default limit of connections served at once; one more is closed at accept (a flood
of idle connections cannot take a thread each)."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may stay silent (mid-body or between requests) before it is closed."""
DRAIN_LIMIT = 64 << 10
"""A refused request's body up to this size is read and dropped after the answer, so the
connection stays usable and the client is not reset before it reads the refusal; a longer
one is never read: the connection is closed."""


def bearer_token(header: str) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <token>`` header, else None.

    The scheme is compared case-insensitively (RFC 7235 2.1) but must be there: a bare
    token, another scheme or an empty token is no bearer token.
    """
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials.encode()


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


def file_mode(rel: str) -> int:
    """The mode of a repository file written from the network: a key file stays private
    (0600) as in the repository, its password's only guard against offline guessing."""
    return 0o600 if rel.startswith("keys/") else 0o644


class SiteHandler(BaseHTTPRequestHandler):
    server: SiteServer
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, int) and code >= 400:  # the log holds refusals, not every upload
            super().log_request(code, size)

    def setup(self) -> None:
        self.handshake_failed: str | None = None
        if isinstance(self.request, ssl.SSLSocket):  # in this thread, not the accept loop
            self.request.settimeout(self.server.idle_timeout)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                self.handshake_failed = f"TLS handshake failed: {e}"
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # a silent client is dropped

    def handle(self) -> None:
        if self.handshake_failed is not None:
            self._audit_refusal(0, self.handshake_failed)
            return
        super().handle()

    def _answer(
        self,
        status: int,
        body: bytes = b"",
        kind: str = "application/json",
        *,
        refused_body: bool = False,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send one answer.  *refused_body*: the request's body is still unread on the
        socket and will not be stored; a small one is dropped after the answer, a large
        (or unannounced) one is left unread and the connection closed."""
        drain = None if close else self._announced_length() if refused_body else 0
        if drain is not None and drain > DRAIN_LIMIT:
            drain = None
        if refused_body and self.headers.get("Expect", "").lower() == "100-continue":
            drain = None  # the client waits for a 100 that never comes: the body never does
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if drain is None:
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.end_headers()
        self.wfile.write(body)
        if drain:
            self.wfile.flush()
            if len(self.rfile.read(drain)) != drain:
                self.close_connection = True

    def _audit_refusal(self, status: int, message: str) -> None:
        try:
            self.server.witness.refused(str(getattr(self, "command", None) or "?"),
                                        str(getattr(self, "path", None) or "?"), status,
                                        message, self.client_address[0])  # fmt: skip
        except OSError as e:
            self.log_error("refusal not audited: %s", e)

    def _error(
        self, status: int, message: str, *, refused_body: bool = False, **headers: str
    ) -> None:
        self._audit_refusal(status, message)
        body = json.dumps({"error": message, "status": status}).encode()
        self._answer(status, body, refused_body=refused_body, headers=headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, headers, version, method) as the
        site's JSON errors, always with a status line, and the connection closed."""
        self.log_error("code %d, message %s", code, message)
        if self.request_version == "HTTP/0.9":  # unknown yet, or a request line that bad
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        self._audit_refusal(code, message or HTTPStatus(code).phrase)
        body = json.dumps({"error": message or HTTPStatus(code).phrase, "status": code}).encode()
        self._answer(code, body, close=True)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # "GET /path": no headers, so no token
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return False
        return True

    def _announced_length(self) -> int | None:
        """Content-Length, or None when missing or malformed (the body's end is unknown)."""
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            return None
        return length if length >= 0 else None

    def _authorized(self, *, refused_body: bool = False, action: str = "read") -> bool:
        """Whether the headers carry a token whose role may *action* (read, write,
        delete); answers 401 (no or unknown token) or 403 (a role that may not)."""
        given = bearer_token(self.headers.get("Authorization", ""))
        role = None if given is None else self.server.role_of(given)
        if role is not None and action in SITE_ROLES[role]:
            return True
        if role is not None:
            self._error(HTTPStatus.FORBIDDEN, f"a {role} token may not {action} here",
                        refused_body=refused_body)  # fmt: skip
            return False
        message = (
            "wrong bearer token"
            if given is not None
            else "missing bearer token: send 'Authorization: Bearer <token>'"
        )
        self._error(
            HTTPStatus.UNAUTHORIZED,
            message,
            refused_body=refused_body,
            **{"WWW-Authenticate": "Bearer"},
        )
        return False

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue`` gets its 100 only after the token and path are good."""
        if self.command == "PUT" and not (
            self._authorized(refused_body=True, action="write")
            and self._path(refused_body=True)
            and self._body_length() is not None
        ):
            return False
        return super().handle_expect_100()

    def _path(self, *, refused_body: bool = False) -> str | None:
        rel = self.path.removeprefix(FILES + "/")
        if not self.path.startswith(FILES + "/") or not ALLOWED_PATH.fullmatch(rel):
            self._error(
                HTTPStatus.NOT_FOUND,
                f"not a repository file: {self.path!r}",
                refused_body=refused_body,
            )
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
        if self.path == WITNESS:
            self._answer(HTTPStatus.OK, json.dumps(self.server.witness.checkpoint()).encode())
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

    def _body_length(self) -> int | None:
        """The announced body length when it is acceptable; else answers and None."""
        text = self.headers.get("Content-Length")
        limit = self.server.max_body
        if text is None:
            self._error(HTTPStatus.LENGTH_REQUIRED, "PUT needs a Content-Length", refused_body=True)
            return None
        length = self._announced_length()
        if length is None:
            self._error(HTTPStatus.BAD_REQUEST, f"bad Content-Length {text!r}", refused_body=True)
            return None
        if length > limit:
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes is over this DR site's limit of {limit} bytes",
                refused_body=True,
            )
            return None
        return length

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        # everything that can refuse is decided from the headers: the body is read last
        if not self._authorized(refused_body=True, action="write"):
            return
        rel = self._path(refused_body=True)
        if rel is None:
            return
        length = self._body_length()
        if length is None:
            return
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
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
            audit = rel.startswith("audit/")
            problem = self.server.witness.admits(rel, data) if audit else None
            if problem is not None:
                self._error(HTTPStatus.UNPROCESSABLE_ENTITY,
                            f"{rel}: not the next entry of the audit log: {problem}")  # fmt: skip
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data, mode=file_mode(rel))
            if audit:  # under the lock: the next entry is checked against this one
                self.server.witness.observe()
        self._answer(HTTPStatus.CREATED, b'{"stored":true}')


    def do_DELETE(self) -> None:  # noqa: N802 - http.server's naming
        """An admin token may delete a repository file (pruning the DR site), but never
        one younger than the retention lock (``--retain``)."""
        if not self._authorized(action="delete"):
            return
        rel = self._path()
        if rel is None:
            return
        target = self.server.root / rel
        with self.server.write_lock:
            try:
                age = time.time() - target.stat().st_mtime
            except FileNotFoundError:
                self._error(HTTPStatus.NOT_FOUND, f"no such file: {rel}")
                return
            if age < self.server.retain:
                self._error(HTTPStatus.LOCKED, f"{rel} is {format_duration(age)} old; the "
                            f"retention lock keeps everything younger than "
                            f"{format_duration(self.server.retain)}")  # fmt: skip
                return
            target.unlink()
            fsync_dir(target.parent)
        self.server.witness.access_log.append("site delete", "ok", path=rel,
                                              client=self.client_address[0])  # fmt: skip
        self._answer(HTTPStatus.OK, b'{"deleted":true}')


class SiteServer(QuietHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        root: Path,
        token: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body: int = MAX_BODY,
        timeout: float = IDLE_TIMEOUT,
        tls: ssl.SSLContext | None = None,
        tokens: dict[bytes, str] | None = None,
        retain: float = 0.0,
        max_connections: int = MAX_CONNECTIONS,
    ):
        """*token*: the writer's (append-only: list, read, add); *tokens*: more tokens
        with their roles (writer, reader, admin); *retain*: seconds during which no file
        may be deleted, even by an admin token; *max_connections*: served at once."""
        if max_connections < 1:
            raise ValueError(f"max_connections {max_connections} must be >= 1")
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        if max_body < 0:
            raise ValueError(f"max_body {max_body} must be >= 0")
        if timeout <= 0:
            raise ValueError(f"timeout {timeout} must be > 0")
        self.root = root
        self.tokens = {token: "writer", **(tokens or {})}
        for role in self.tokens.values():
            if role not in SITE_ROLES:
                raise ValueError(f"DR-site token role {role!r} is not one of "
                                 f"{', '.join(SITE_ROLES)}")  # fmt: skip
        if retain < 0:
            raise ValueError(f"retain {retain} must be >= 0")
        self.retain = retain
        self.max_body = max_body
        self.idle_timeout = timeout
        self.write_lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self.witness = Witness(root)
        super().__init__((host, port), SiteHandler)
        if tls is not None:  # handshakes happen in the handler threads (see setup)
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )


    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        """A connection over the limit is closed at once, unread, and audited."""
        if not self._slots.acquire(blocking=False):
            try:
                self.witness.refused("-", "-", 503, f"over {self.max_connections} connections",
                                     str(client_address[0]))  # fmt: skip
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def role_of(self, given: bytes) -> str | None:
        """The role of the token *given*; every token is compared (constant time each)."""
        found = None
        for token, role in self.tokens.items():
            if hmac.compare_digest(given, token):
                found = role
        return found


def read_tokens(path: Path) -> dict[bytes, str]:
    """A tokens file: one ``<role> <token>`` per line (``#`` comments)."""
    tokens: dict[bytes, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        role, _, token = line.partition(" ")
        if role not in SITE_ROLES or not token.strip():
            raise ValueError(f"{path}:{number}: expected '<role> <token>' with role one of "
                             f"{', '.join(SITE_ROLES)}")  # fmt: skip
        tokens[token.strip().encode()] = role
    return tokens


def read_token(path: Path) -> bytes:
    token = path.read_bytes().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaoskit.dr.protect.site", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-body", type=int, default=MAX_BODY, metavar="BYTES")
    parser.add_argument("--timeout", type=float, default=IDLE_TIMEOUT, metavar="SECONDS")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, metavar="N")
    parser.add_argument("--tokens", type=Path, help="more tokens: '<role> <token>' lines")
    parser.add_argument("--retain", default="0s",
                        help="retention lock: nothing younger is deleted (e.g. 30d)")  # fmt: skip
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", type=Path, help="... and this key")
    args = parser.parse_args(argv)
    try:
        tls = None
        if args.tls_cert or args.tls_key:
            from chaoskit.dr.protect.site_tls import server_context

            if not (args.tls_cert and args.tls_key):
                raise ValueError("--tls-cert and --tls-key go together")
            tls = server_context(args.tls_cert, args.tls_key)
        server = SiteServer(
            args.root,
            read_token(args.token_file),
            args.host,
            args.port,
            max_body=args.max_body,
            timeout=args.timeout,
            tls=tls,
            tokens=read_tokens(args.tokens) if args.tokens else None,
            retain=parse_duration(args.retain, what="--retain"),
            max_connections=args.max_connections,
        )
    except (OSError, ValueError, ConfigError) as e:
        print(f"dr-site: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    scheme = "https" if tls is not None else "http"
    print(f"dr-site: serving {args.root} on {scheme}://{args.host}:{server.server_address[1]}",
          flush=True)  # fmt: skip
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
