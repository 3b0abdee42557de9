"""The HTTP side of the model server: TF Serving's REST API subset, JSON in and out.

A ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive; each request resolves its
version (number, label or newest loaded) once, so a version or label switch in the
middle of a request is harmless.  Routes, error messages and codes are TF Serving's
(``/versions/N`` and ``/labels/L`` on status, metadata and ``:predict``; case-insensitive
paths); every answer, including errors and paths outside ``/v1/`` (where TF Serving
answers an HTML 404), is a JSON object, except TF Serving's Prometheus page
(``/monitoring/prometheus/metrics``, see :mod:`chaoskit.serving.metrics`).
"""

from __future__ import annotations

import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from chaoskit.http_server import QuietHTTPServer
from chaoskit.serving import api, examples, tensors
from chaoskit.serving.api import ApiError
from chaoskit.serving.metrics import CONTENT_TYPE, RequestMetrics
from chaoskit.serving.store import ModelStore, Servable, Signature

_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL
# TF Serving's own route patterns (http_rest_api_util.cc), matched whole and ignoring
# case; the verb and "metadata" are then compared as written, as TF Serving does, so
# ":PREDICT" is a malformed request and ".../METADATA" asks for the status.
_SPEC = r"(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
_PREDICTION = re.compile(r"/v1/models/([^/:]+)" + _SPEC + r":(classify|regress|predict)", _FLAGS)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?" + _SPEC + r"(?:/(metadata))?", _FLAGS)
_API = re.compile(r"/v1/.*", _FLAGS)
_MAX_VERSION = 2**63 - 1
METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default prometheus_config.path
MAX_BODY = 64 * 1024 * 1024


class ServingHTTPServer(QuietHTTPServer):
    """Threading server that knows the store and skips the slow reverse DNS lookup."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], store: ModelStore) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.store = store
        self.metrics = RequestMetrics()
        super().__init__(address, ServingHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which may wait on DNS.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class ServingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chaoskit-serving/0.1"
    timeout = 120  # idle keep-alive connections are closed after this
    server: ServingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the journal, not stderr, records what matters."""

    # -- plumbing ----------------------------------------------------------------

    def _send(self, status: int, body: dict[str, Any] | bytes) -> None:
        """A JSON object, or bytes: the Prometheus page."""
        if isinstance(body, dict):
            raw, content_type = json.dumps(body, separators=(",", ":")).encode(), "application/json"
        else:
            raw, content_type = body, CONTENT_TYPE
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        if self.close_connection:
            self.send_header("Connection", "close")
        try:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)
        except (ConnectionError, TimeoutError):  # the client gave up waiting
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"bad Content-Length header: {length_text!r}") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise ApiError(400, f"request body of {length} bytes refused (max {MAX_BODY})")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise ApiError(400, "malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                self.close_connection = True
                raise ApiError(400, f"request body over {MAX_BODY} bytes refused")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        code = "OK"
        answer: dict[str, Any] | bytes
        try:
            body = self._read_body()  # also for GET: keep-alive needs the body consumed
            status, answer = self._route(method, body)
        except ApiError as e:
            status, answer, code = e.status, {"error": e.message}, e.code
        except Exception as e:  # noqa: BLE001 - a request must never kill the server
            status, answer, code = 500, {"error": f"Internal: {type(e).__name__}: {e}"}, "INTERNAL"
        inference = _PREDICTION.fullmatch(self.path.split("?", 1)[0]) if method == "POST" else None
        if inference is not None:
            self.server.metrics.observe(unquote(inference.group(1)), inference.group(4).lower(),
                                        code, time.perf_counter() - started)  # fmt: skip
        self._send(status, answer)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -- the API -----------------------------------------------------------------

    def _route(self, method: str, body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH and method == "GET":
            return 200, self.server.metrics.exposition()
        if _API.fullmatch(path) is None:  # TF Serving: an HTML 404 page; here JSON
            raise ApiError(404, f"Malformed request: {method} {path}")
        malformed = ApiError(400, f"Malformed request: {method} {path}")
        pattern = {"POST": _PREDICTION, "GET": _STATUS}.get(method)
        match = None if pattern is None else pattern.fullmatch(path)
        if match is None:
            raise malformed
        name, version_text, label_text, last = match.groups()
        name = unquote(name or "")
        label = None if label_text is None else unquote(label_text)
        version: int | None = None
        if version_text is not None:
            version = int(version_text)
            if version > _MAX_VERSION:
                raise ApiError(400, f"Failed to convert version: {version_text} to numeric.")
        if method == "POST":
            if last == "predict":
                return 200, self._predict(name, version, label, body)
            if last in ("classify", "regress"):
                return 200, self._examples(last, name, version, label, body)
            raise malformed
        if not name:
            raise ApiError(400, "Missing model name in request.")
        if last == "metadata":
            return 200, self._metadata(name, version, label)
        return 200, self._status(name, version)

    def _servable(self, name: str, version: int | None, label: str | None) -> Servable:
        return api.servable(self.server.store, name, version, label)

    def _status(self, name: str, version: int | None) -> dict[str, Any]:
        return {"model_version_status": api.model_status(self.server.store, name, version)}

    def _metadata(self, name: str, version: int | None, label: str | None) -> dict[str, Any]:
        servable = self._servable(name, version, label)
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": servable.signature_def}},
        }

    def _signature(
        self, name: str, version: int | None, label: str | None, body: bytes
    ) -> tuple[dict[str, Any], Servable, Signature]:
        """The request document, the version it asks for, and its signature."""
        try:
            doc = tensors.parse_body(body)
            signature_name = tensors.signature_name(doc)
        except tensors.RequestError as e:
            raise ApiError(400, str(e)) from None
        servable = self._servable(name, version, label)
        return doc, servable, api.signature(servable, signature_name)

    def _predict(
        self, name: str, version: int | None, label: str | None, body: bytes
    ) -> dict[str, Any]:
        doc, _, signature = self._signature(name, version, label, body)
        try:
            fmt, inputs = tensors.request_tensors(doc, signature.inputs)
        except tensors.RequestError as e:
            raise ApiError(400, str(e)) from None
        outputs = api.run(signature, inputs)
        try:
            return tensors.response_body(fmt, outputs)
        except ValueError as e:
            raise ApiError(400, str(e)) from None

    def _examples(
        self, method: str, name: str, version: int | None, label: str | None, body: bytes
    ) -> dict[str, Any]:
        """``:classify`` / ``:regress`` (see :mod:`chaoskit.serving.examples`)."""
        doc, servable, signature = self._signature(name, version, label, body)
        try:
            serialized = examples.serialized_examples(doc, method)
        except examples.ExamplesError as e:
            raise ApiError(400, str(e)) from None
        return api.run_examples(method, servable, signature, serialized)
