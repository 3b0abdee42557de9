"""The threading HTTP server chaoskit's own servers (model server, gateway, DR site) are
built on: a client that hung up before its answer is routine, not a traceback on stderr."""

from __future__ import annotations

import logging
import sys
from http.server import ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class QuietHTTPServer(ThreadingHTTPServer):
    """socketserver prints a traceback for every request whose handler raised; probes and
    load generators that give up on a slow or hung replica make that routine, and their
    broken pipes buried the gateway's output (60 tracebacks in one benchmark run)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up or timed out is dropped silently; anything else is
        logged once, in one line."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        log.warning("request from %s failed: %r", client_address, error)
