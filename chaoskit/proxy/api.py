"""Toxiproxy's HTTP API, served by a small HTTP/1.1 handler on the proxies' event loop.

Sharing the loop with the data plane keeps every state change on one thread; the
data plane only ever does short, bounded work per callback, so the API answers at
once even while proxies carry heavy traffic.  Errors use Toxiproxy's body
``{"error": msg, "status": code}``; a malformed request never stops the server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote

from chaoskit.proxy import metrics
from chaoskit.proxy.model import ApiError, decode_json
from chaoskit.proxy.registry import Registry

VERSION = "2.12.0-chaoskit"
"""Reported by ``GET /version``: the Toxiproxy API level this server speaks."""

MAX_BODY = 16 << 20
IDLE_TIMEOUT = 60.0
READ_TIMEOUT = 15.0

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented"}

Response = tuple[int, Any, str]  # status, payload (JSON-able, str or None), content type
JSON = "application/json"


class _BadRequest(Exception):
    """The request itself cannot be parsed: answer and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiHandler:
    """Routes HTTP requests to a :class:`Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: requests answered in order, kept alive when asked."""
        try:
            while True:
                try:
                    request = await self._read_request(reader, writer)
                except _BadRequest as e:
                    await self._write(writer, e.status, _error(str(e), e.status), JSON, False)
                    return
                if request is None:
                    return
                method, path, headers, body, keep_alive = request
                status, payload, ctype = await self.dispatch(method, path, headers, body)
                await self._write(writer, status, payload, ctype, keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # server shutting down: end quietly, the connection is closed below
        finally:
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        try:
            line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
        except (ValueError, asyncio.LimitOverrunError) as e:
            raise _BadRequest(431, "request line too long") from e
        if not line:
            return None
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, f"malformed request line {line[:80]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for _ in range(200):
            try:
                raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            except (ValueError, asyncio.LimitOverrunError) as e:
                raise _BadRequest(431, "header line too long") from e
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest(400, f"malformed header {raw[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadRequest(431, "too many headers")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it on big bodies
        body = await self._read_body(reader, headers)
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
        return method.upper(), target, headers, body, keep_alive

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                try:
                    size = int(size_line.split(b";")[0].strip() or b"x", 16)
                except ValueError as e:
                    raise _BadRequest(400, "malformed chunk size") from e
                total += size
                if size < 0 or total > MAX_BODY:
                    raise _BadRequest(413, "request body too large")
                if size == 0:
                    await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                    return b"".join(chunks)
                chunks.append(await asyncio.wait_for(reader.readexactly(size), READ_TIMEOUT))
                await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        length_text = headers.get("content-length", "0") or "0"
        if not length_text.isdigit():
            raise _BadRequest(400, f"malformed Content-Length {length_text[:40]!r}")
        length = int(length_text)
        if length > MAX_BODY:
            raise _BadRequest(413, "request body too large")
        if not length:
            return b""
        return await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)

    async def _write(self, writer: asyncio.StreamWriter, status: int, payload: Any, ctype: str,
                     keep_alive: bool) -> None:
        if payload is None:
            data = b""
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = (json.dumps(payload) + "\n").encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        if status != 204:
            head.append(f"Content-Type: {ctype}")
            head.append(f"Content-Length: {len(data)}")
        head.append("Connection: keep-alive" if keep_alive else "Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (data if status != 204 else b""))
        await writer.drain()

    async def dispatch(self, method: str, target: str, headers: dict[str, str],
                       body: bytes) -> Response:
        """Answer one request; every failure becomes Toxiproxy's error body."""
        if headers.get("user-agent", "").startswith("Mozilla/"):
            return 403, "User agent not allowed\n", "text/plain; charset=utf-8"
        path = target.split("?", 1)[0]
        segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        try:
            return await self._route(method, segments, body)
        except ApiError as e:
            return e.status, e.body(), JSON
        except Exception as e:  # noqa: BLE001 - the server must survive any request
            return 500, _error(f"internal error: {type(e).__name__}: {e}", 500), JSON

    async def _route(self, method: str, seg: list[str], body: bytes) -> Response:
        reg = self.registry
        n = len(seg)
        if seg == ["version"]:
            _allow(method, "GET")
            return 200, {"version": VERSION}, JSON
        if seg == ["metrics"]:
            _allow(method, "GET")
            return 200, metrics.render(reg.proxies.values()), metrics.CONTENT_TYPE
        if seg == ["reset"]:
            _allow(method, "POST")
            await reg.reset()
            return 204, None, JSON
        if seg == ["populate"]:
            _allow(method, "POST")
            proxies = await reg.populate(decode_json(body))
            return 201, {"proxies": [p.to_json() for p in proxies]}, JSON
        if n == 0 or seg[0] != "proxies" or n > 4 or (n == 3 and seg[2] != "toxics") \
                or (n == 4 and seg[2] != "toxics"):
            raise ApiError(f"no such endpoint: /{'/'.join(seg)}", 404)
        if n == 1:
            _allow(method, "GET", "POST")
            if method == "GET":
                return 200, {name: p.to_json() for name, p in reg.proxies.items()}, JSON
            return 201, (await reg.create(decode_json(body))).to_json(), JSON
        if n == 2:
            _allow(method, "GET", "POST", "PATCH", "DELETE")
            if method == "GET":
                return 200, reg.get(seg[1]).to_json(), JSON
            if method == "DELETE":
                reg.delete(seg[1])
                return 204, None, JSON
            return 200, (await reg.update(seg[1], decode_json(body))).to_json(), JSON
        proxy = reg.get(seg[1])
        if n == 3:
            _allow(method, "GET", "POST")
            if method == "GET":
                return 200, [t.to_json() for t in proxy.toxics], JSON
            return 200, proxy.add_toxic(decode_json(body)).to_json(), JSON
        _allow(method, "GET", "POST", "PATCH", "DELETE")
        if method == "GET":
            return 200, proxy.find_toxic(seg[3]).to_json(), JSON
        if method == "DELETE":
            proxy.remove_toxic(seg[3])
            return 204, None, JSON
        return 200, proxy.update_toxic(seg[3], decode_json(body)).to_json(), JSON


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(f"method {method} not allowed here (allowed: {', '.join(allowed)})", 405)


def _error(message: str, status: int) -> dict[str, Any]:
    return {"error": message, "status": status}
