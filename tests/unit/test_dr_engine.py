"""The DR engine loop against a TF-Serving-like HTTP server (a stand-in for an external
tensorflow/serving, which does not check canaries itself)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaoskit.dr.online.engine import DRConfig, DREngine
from chaoskit.dr.online.goldens import Goldens
from chaoskit.journal import Journal, read_journal
from chaoskit.serving.client import ServingClient
from chaoskit.waiting import wait_until

GOLDEN = [[1.0, 2.0, 3.0, 4.0]]


class FakeServing(BaseHTTPRequestHandler):
    outputs = GOLDEN

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"predictions": type(self).outputs}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serving(tmp_path):
    extra = tmp_path / "models" / "7" / "assets.extra"
    extra.mkdir(parents=True)
    canary = {"inputs": [[0.0] * 8], "outputs": GOLDEN, "tolerance": 1e-4}
    (extra / "chaoskit_canary.json").write_text(json.dumps(canary))
    handler = type("Handler", (FakeServing,), {"outputs": GOLDEN})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler, Goldens(tmp_path / "models")
    server.shutdown()
    server.server_close()


class RecordingRecovery:
    name = "fix"

    def __init__(self, handler):
        self.handler = handler
        self.calls = []

    def run(self, service):
        self.calls.append(service)
        self.handler.outputs = GOLDEN
        return True


def test_wrong_outputs_are_detected_as_a_canary_failure(serving, tmp_path):
    server, handler, goldens = serving
    journal = Journal(tmp_path / "journal.jsonl")
    client = ServingClient("127.0.0.1", server.server_address[1], "m", timeout=1)
    recovery = RecordingRecovery(handler)
    engine = DREngine(client, goldens, journal, recovery, config=DRConfig(probe_interval=0.02))
    engine.start()
    try:
        wait_until(lambda: sum(e["event"] == "probe" for e in read_journal(journal.path)) >= 5, 10)
        assert not recovery.calls  # correct answers: no alert
        handler.outputs = [[1.0, 2.0, 3.0, 4.5]]  # silently wrong
        wait_until(lambda: recovery.calls, 10, what="recovery after canary mismatch")
    finally:
        engine.stop()
    events = read_journal(journal.path)
    detected = [e for e in events if e["event"] == "detected"]
    assert len(detected) == 1 and detected[0]["signal"] == "canary"
    failed = [e for e in events if e["event"] == "probe" and not e["ok"]]
    assert len(failed) >= 2 and all("canary" in e["error"] for e in failed)


def test_a_refused_connection_is_a_probe_failure(serving, tmp_path):
    server, handler, goldens = serving
    journal = Journal(tmp_path / "journal.jsonl")
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    client = ServingClient("127.0.0.1", port, "m", timeout=1)
    recovery = RecordingRecovery(handler)
    engine = DREngine(client, goldens, journal, recovery, config=DRConfig(probe_interval=0.02))
    engine.start()
    try:
        wait_until(lambda: recovery.calls, 10, what="recovery after refused probes")
    finally:
        engine.stop()
    detected = [e for e in read_journal(journal.path) if e["event"] == "detected"]
    assert detected[0]["signal"] == "probe" and "refused" in detected[0]["reason"]
