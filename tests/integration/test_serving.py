"""The reference model server as a real process, against versions a real trainer exported."""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaoskit.journal import JOURNAL_ENV, read_journal
from chaoskit.model import CANARY_INPUTS, import_tensorflow, load_canary, version_dirs
from chaoskit.serving.client import ServingClient
from chaoskit.stack.ports import free_port
from chaoskit.waiting import wait_until

pytestmark = pytest.mark.integration

MODEL = "reference"
DATA_FILE = "variables.data-00000-of-00001"
PREDICT = f"/v1/models/{MODEL}:predict"
OK = {"error_code": "OK", "error_message": ""}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 0, 20 and 40 of the reference model, exported by the real trainer once."""
    root = tmp_path_factory.mktemp("trained")
    proc = subprocess.run(
        [
            sys.executable, "-m", "chaoskit.trainer",
            "--model-base-path", str(root / "models"),
            "--checkpoint-dir", str(root / "ckpt"),
            "--export-every", "20", "--checkpoint-every", "20",
            "--max-steps", "40", "--step-delay", "0",
        ],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(version_dirs(root / "models")) == [0, 20, 40]
    return root / "models"


class Server:
    """One ``python -m chaoskit.serving`` process with its own journal."""

    def __init__(self, root: Path, base: Path, *extra: str, port: int = 0) -> None:
        self.journal = root / f"journal-{id(self)}.jsonl"
        self.port_file = root / f"port-{id(self)}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "chaoskit.serving",
                "--model-name", MODEL, "--model-base-path", str(base),
                "--rest-port", str(port), "--port-file", str(self.port_file),
                "--poll-interval", "0.2", *extra,
            ],
            env={**os.environ, JOURNAL_ENV: str(self.journal)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    @property
    def port(self) -> int:
        text = wait_until(
            lambda: self.port_file.exists() and self.port_file.read_text(), 30, what="port file"
        )
        return int(text)

    def client(self) -> ServingClient:
        return ServingClient("127.0.0.1", self.port, MODEL, timeout=10)

    def events(self, name: str) -> list[dict]:
        if not self.journal.exists():
            return []
        return [e for e in read_journal(self.journal) if e["event"] == name]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()
        assert server.proc.returncode is not None


def start(servers: list[Server], root: Path, base: Path, *extra: str, port: int = 0) -> Server:
    server = Server(root, base, *extra, port=port)
    servers.append(server)
    return server


def install(src: Path, base: Path, version: int) -> Path:
    """Copy a version in the way an exporter must: whole, then renamed into place."""
    tmp = base / f".tmp-install-{version}"
    shutil.copytree(src, tmp)
    os.rename(tmp, base / str(version))
    return base / str(version)


def flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def assert_matches_canary(values: list, version_dir: Path) -> None:
    want = flat(load_canary(version_dir)["outputs"])
    assert flat(values) == pytest.approx(want, abs=1e-4)


def state_of(client: ServingClient, version: int) -> dict | None:
    answer = client.status()
    for entry in answer.body.get("model_version_status", []):
        if entry["version"] == str(version):
            return entry
    return None


@pytest.fixture(scope="module")
def shared(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on a copy of version 20, for the read-only API tests."""
    root = tmp_path_factory.mktemp("shared")
    base = root / "models"
    base.mkdir()
    install(exported / "20", base, 20)
    server = Server(root, base)
    wait_until(lambda: server.client().available_version() == 20, 90, what="version 20")
    yield server
    server.kill()


def test_status_metadata_and_predict_in_both_forms(shared, exported):
    client = shared.client()
    assert client.status().status == 200
    assert client.status().body == {
        "model_version_status": [{"version": "20", "state": "AVAILABLE", "status": OK}]
    }
    assert client.status(20).body == client.status().body
    meta = client.metadata()
    assert meta.status == 200 and meta.body["model_spec"] == {
        "name": MODEL, "signature_name": "", "version": "20"
    }  # fmt: skip
    sig = meta.body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    x, y = sig["inputs"]["x"], sig["outputs"]["y"]
    assert x["dtype"] == y["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "8"]
    assert [d["size"] for d in y["tensor_shape"]["dim"]] == ["-1", "4"]

    row = client.predict(CANARY_INPUTS)
    assert row.status == 200 and set(row.body) == {"predictions"}
    assert_matches_canary(row.body["predictions"], exported / "20")
    columnar = client.predict(inputs=CANARY_INPUTS)
    assert columnar.status == 200 and set(columnar.body) == {"outputs"}
    assert_matches_canary(columnar.body["outputs"], exported / "20")
    named_rows = client.predict([{"x": r} for r in CANARY_INPUTS], version=20)
    assert_matches_canary(named_rows.body["predictions"], exported / "20")
    named_columns = client.predict(inputs={"x": CANARY_INPUTS}, signature_name="serving_default")
    assert_matches_canary(named_columns.body["outputs"], exported / "20")
    one = client.predict(CANARY_INPUTS[2:3])
    want = load_canary(exported / "20")["outputs"][2]
    assert one.body["predictions"][0] == pytest.approx(want, abs=1e-4)


def test_answered_predictions_are_counted_ok_on_the_prometheus_page(shared):
    client = shared.client()
    key = (":tensorflow:serving:request_count", (("model_name", MODEL), ("status", "OK")))
    before = client.metrics().get(key, 0.0)
    assert all(client.predict(CANARY_INPUTS).ok for _ in range(5))
    after = client.metrics()
    assert after[key] == before + 5
    latency = (":tensorflow:serving:request_latency_count",
               (("API", "predict"), ("entrypoint", "REST"), ("model_name", MODEL)))  # fmt: skip
    assert after[latency] >= 5


def test_keep_alive_serves_many_requests_on_one_connection(shared):
    conn = http.client.HTTPConnection("127.0.0.1", shared.port, timeout=10)
    try:
        body = json.dumps({"instances": CANARY_INPUTS}).encode()
        for _ in range(3):
            conn.request("POST", PREDICT, body=body)
            answer = conn.getresponse()
            assert answer.status == 200 and len(json.loads(answer.read())["predictions"]) == 4
            conn.request("GET", f"/v1/models/{MODEL}")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.getheader("Content-Type") == "application/json"
            answer.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("POST", PREDICT, b'{"instances": [[1, 2', 400, "JSON Parse error"),
        ("POST", PREDICT, b"", 400, "document is empty"),
        ("POST", PREDICT, b"[1]", 400, "Is not object"),
        ("POST", PREDICT, b'{"instances": [[1, 2]]}', 400, "[-1,8]"),
        ("POST", PREDICT, b'{"instances": [["a"]]}', 400, "DT_FLOAT"),
        ("POST", PREDICT, b'{"instances": [], "inputs": []}', 400, "only one of"),
        ("POST", PREDICT, b'{"signature_name": "x"}', 400, "not found"),
        ("POST", PREDICT, b'{"foo": 1}', 400, "Missing 'inputs' or 'instances'"),
        ("POST", PREDICT, b'{"instances": []}', 400, "No values"),
        ("POST", "/v1/models/other:predict", b'{"instances": [[0]]}', 404, "Latest(other)"),
        ("POST", f"/v1/models/{MODEL}/versions/7:predict", b"{}", 404, "Specific(reference, 7)"),
        ("GET", f"/v1/models/{MODEL}/versions/7", None, 404, "version 7"),
        ("GET", "/v1/models/other", None, 404, "other"),
        ("GET", "/nothing/here", None, 404, "Malformed request"),
        ("GET", f"/v1/models/{MODEL}:predict", None, 400, "Malformed request"),  # as TF Serving
    ],
)  # fmt: skip
def test_errors_are_json_with_tf_serving_codes(shared, method, path, body, status, needle):
    answer = shared.client().request(method, path, body)
    assert answer.status == status, answer.body
    assert set(answer.body) == {"error"} and needle in answer.body["error"]


def test_bad_json_names_reason_and_offset(shared):
    answer = shared.client().request("POST", PREDICT, b'{"instances": [1,,2]}')
    assert answer.status == 400
    assert answer.body["error"].startswith("JSON Parse error: ")
    assert answer.body["error"].endswith("at offset: 17")


def test_version_lifecycle_new_damaged_repaired_and_vanished(servers, exported, tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    install(exported / "20", base, 20)
    (base / "not-a-version").mkdir()  # ignored, as TF Serving ignores it
    server = start(servers, tmp_path, base)
    client = server.client()
    wait_until(lambda: client.available_version() == 20, 90, what="version 20 available")
    ready = time.monotonic() - server.started
    (started,) = server.events("serving.started")
    assert started["port"] == server.port and started["pid"] == server.proc.pid

    # A new good version is picked up and the old one unloaded; requests sent all
    # through the switch are answered by one whole version or the other.
    goldens = [flat(load_canary(exported / str(v))["outputs"]) for v in (20, 40)]
    answers: list[tuple[int, list[float]]] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            r = client.predict(CANARY_INPUTS)
            answers.append((r.status, flat(r.body.get("predictions", []))))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        install(exported / "40", base, 40)
        wait_until(lambda: client.available_version() == 40, 30, what="version 40 available")
        switched = len(answers)
        wait_until(lambda: len(answers) > switched + 3, 10, what="answers after the switch")
    finally:
        done.set()
        worker.join(timeout=30)
    assert all(status == 200 for status, _ in answers), {status for status, _ in answers}
    by = [
        next(i for i, g in enumerate(goldens) if v == pytest.approx(g, abs=1e-4))
        for _, v in answers
    ]
    assert by[-1] == 1 and by == sorted(by)  # whole versions, never back to the old one
    assert_matches_canary(client.predict(CANARY_INPUTS).body["predictions"], exported / "40")
    assert state_of(client, 20)["state"] == "END"
    assert [e["version"] for e in server.events("serving.version_loaded")] == [20, 40]
    assert all(e["load_s"] > 0 for e in server.events("serving.version_loaded"))

    # A newer version with a bit flip in its variables leaves version 40 serving.
    bad_data = install(exported / "20", base, 60)
    raw = bytearray((bad_data / "variables" / DATA_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (bad_data / "variables" / DATA_FILE).write_bytes(bytes(raw))
    # ... and one newer still whose saved_model.pb is damaged.
    bad_pb = install(exported / "20", base, 70)
    pb = bad_pb / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:200] + b"\xff" * 64)
    wait_until(lambda: len(server.events("serving.load_failed")) >= 2, 30, what="two failed loads")
    failures = {e["version"]: e for e in server.events("serving.load_failed")}
    assert failures[60]["file"] == str(bad_data / "variables" / DATA_FILE)
    assert failures[70]["file"] == str(pb)
    assert failures[70]["error_type"] == "OSError" and failures[60]["error"]
    for version in (60, 70):
        entry = state_of(client, version)
        assert entry["state"] == "END", entry
        assert entry["status"]["error_code"] == "DATA_LOSS" and entry["status"]["error_message"]
    assert client.available_version() == 40
    assert_matches_canary(client.predict(CANARY_INPUTS).body["predictions"], exported / "40")
    # Failed versions are not retried while unchanged: a later poll loads a good
    # version 50 below them, and they have still failed once each.
    install(exported / "40", base, 50)
    wait_until(lambda: client.available_version() == 50, 30, what="version 50 available")
    assert len(server.events("serving.load_failed")) == 2
    # ... and are retried once their files change: repairing 60 makes it the newest
    # loadable version (70 stays damaged and stays END).
    shutil.copyfile(exported / "20" / "variables" / DATA_FILE, bad_data / "variables" / DATA_FILE)
    wait_until(lambda: client.available_version() == 60, 30, what="repaired version 60")
    assert_matches_canary(client.predict(CANARY_INPUTS).body["predictions"], exported / "20")
    assert state_of(client, 70)["state"] == "END"

    # The served version's directory vanishing does not stop serving it.
    shutil.rmtree(base / "60")
    shutil.rmtree(base / "70")
    wait_until(lambda: state_of(client, 70) is None, 10, what="version 70 forgotten")
    assert client.available_version() == 60
    assert client.predict(CANARY_INPUTS).ok

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert ready < 60


def export_examples_model(base: Path, version: int) -> None:
    """A TF1-style SavedModel on serialized tf.Examples (features x: 2 floats, bias: 1
    float, default 0): signatures serving_default (classify: classes a, b, c and their
    softmax scores), scores_only (classify, no classes), regress (sum(x) + bias) and
    predict (a predict signature on the same input)."""
    tf = import_tensorflow()
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        spec = {"x": tf.io.FixedLenFeature([2], tf.float32),
                "bias": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}  # fmt: skip
        parsed = tf.io.parse_example(serialized, spec)
        weight = tf.Variable(1.0, name="weight")
        logits = weight * tf.concat([parsed["x"], parsed["bias"]], axis=1)
        scores = tf.nn.softmax(logits)
        classes = tf.tile(tf.constant([["a", "b", "c"]]), [tf.shape(serialized)[0], 1])
        total = weight * tf.reduce_sum(parsed["x"], axis=1, keepdims=True) + parsed["bias"]
        signatures = {
            "serving_default": v1.saved_model.classification_signature_def(
                serialized, classes, scores),
            "scores_only": v1.saved_model.classification_signature_def(serialized, None, scores),
            "regress": v1.saved_model.regression_signature_def(serialized, total),
            "predict": v1.saved_model.predict_signature_def({"inputs": serialized},
                                                            {"scores": scores}),
        }  # fmt: skip
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(base / str(version)))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def test_classify_and_regress_on_tf_examples(servers, tmp_path):
    base = tmp_path / "models"
    export_examples_model(base, 1)
    grpc_port = free_port()
    server = start(servers, tmp_path, base, "--grpc-port", str(grpc_port))
    client = server.client()
    wait_until(lambda: client.available_version() == 1, 90, what="the examples model")
    path = f"/v1/models/{MODEL}"

    def post(verb: str, doc: dict) -> tuple[int, dict]:
        answer = client.request("POST", f"{path}:{verb}", json.dumps(doc).encode())
        return answer.status, answer.body

    status, body = post(
        "classify", {"examples": [{"x": [1.0, 2.0]}, {"x": [0.5, -1.0], "bias": 3.0}]}
    )
    assert status == 200, body
    for got, row in zip(body["results"], [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], strict=True):
        assert [label for label, _ in got] == ["a", "b", "c"]
        assert [score for _, score in got] == pytest.approx(softmax(row), abs=1e-6)
    status, body = post(
        "classify", {"signature_name": "scores_only", "examples": [{"x": [0.0, 0.0]}]}
    )
    assert status == 200 and [label for label, _ in body["results"][0]] == ["", "", ""]
    # The context's features go into every example; an example's own feature wins.
    status, body = post(
        "regress",
        {
            "signature_name": "regress",
            "context": {"bias": 1.0},
            "examples": [{"x": [1.0, 2.0]}, {"x": [1.0, 2.0], "bias": 2.0}],
        },
    )
    assert status == 200 and body == {"results": [pytest.approx(4.0), pytest.approx(5.0)]}

    two = [{"x": [1.0, 2.0]}]
    errors = [
        ("classify", {"instances": [1]},
         "When method is classify, key 'examples' is expected and was not found"),
        ("regress", {"signature_name": "regress", "examples": []},
         "'examples' value is an empty array"),
        ("classify", {"examples": {"x": 1.0}}, "Expecting 'examples' value to be an list/array"),
        ("classify", {"signature_name": "predict", "examples": two},
         "Expected classification signature method_name to be tensorflow/serving/classify. "
         "Was: tensorflow/serving/predict"),
        ("regress", {"examples": two},
         "Expected regression signature method_name to be tensorflow/serving/regress. "
         "Was: tensorflow/serving/classify"),
        ("classify", {"examples": [{"x": [1.0, "a"]}]},
         "Unexpected element type in feature: x expecting type: float"),
        ("classify", {"examples": [{"x": None}]},
         "Feature: x has element with unexpected JSON type: Null"),
        ("classify", {"examples": [[1.0, 2.0]]}, "Example must be JSON object but got JSON Array"),
        ("classify", {"signature_name": "nope", "examples": two},
         'Serving signature name: "nope" not found in signature def'),
    ]  # fmt: skip
    for verb, doc, message in errors:
        status, body = post(verb, doc)
        assert status == 400 and message in body["error"], (doc, body)
    # A feature the model cannot parse is TensorFlow's own INVALID_ARGUMENT.
    status, body = post("classify", {"examples": [{"x": [1.0]}]})
    assert status == 400 and "x" in body["error"], body
    counted = client.metrics()
    key = (":tensorflow:serving:request_latency_count",
           (("API", "classify"), ("entrypoint", "REST"), ("model_name", MODEL)))  # fmt: skip
    assert counted[key] >= 10
    grpc_classify_and_regress(grpc_port)


def grpc_classify_and_regress(port: int) -> None:
    """The same model over gRPC: Classify and Regress answer what the REST routes do,
    the context's features merged, TF Serving's refusals as INVALID_ARGUMENT."""
    import grpc
    from tensorflow_serving.apis import (
        classification_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    def example(**features: list[float]) -> Any:
        from tensorflow.core.example import example_pb2

        made = example_pb2.Example()
        for name, values in features.items():
            made.features.feature[name].float_list.value.extend(values)
        return made

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        ask = classification_pb2.ClassificationRequest()
        ask.model_spec.name = MODEL
        ask.input.example_list.examples.extend([example(x=[1.0, 2.0]),
                                                example(x=[0.5, -1.0], bias=[3.0])])  # fmt: skip
        got = stub.Classify(ask, timeout=30)
        assert got.model_spec.version.value == 1
        for row, want in zip(got.result.classifications, [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]],
                             strict=True):  # fmt: skip
            assert [c.label for c in row.classes] == ["a", "b", "c"]
            assert [c.score for c in row.classes] == pytest.approx(softmax(want), abs=1e-6)
        reg = regression_pb2.RegressionRequest()
        reg.model_spec.name, reg.model_spec.signature_name = MODEL, "regress"
        with_context = reg.input.example_list_with_context
        with_context.context.CopyFrom(example(bias=[1.0]))
        with_context.examples.extend([example(x=[1.0, 2.0]), example(x=[1.0, 2.0], bias=[2.0])])
        values = [r.value for r in stub.Regress(reg, timeout=30).result.regressions]
        assert values == [pytest.approx(4.0), pytest.approx(5.0)]
        wrong = regression_pb2.RegressionRequest()
        wrong.model_spec.name = MODEL  # serving_default is a classify signature
        wrong.input.example_list.examples.append(example(x=[1.0, 2.0]))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Regress(wrong, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Expected regression signature method_name" in refused.value.details()
        empty = classification_pb2.ClassificationRequest()
        empty.model_spec.name = MODEL
        with pytest.raises(grpc.RpcError) as nothing:
            stub.Classify(empty, timeout=30)
        assert (nothing.value.code(), nothing.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")


def test_no_version_is_503_until_one_appears(servers, exported, tmp_path):
    base = tmp_path / "empty"
    base.mkdir()
    server = start(servers, tmp_path, base)
    client = server.client()
    answer = client.predict(CANARY_INPUTS)
    assert answer.status == 503 and "no version" in answer.body["error"]
    assert client.status().status == 404 and client.available_version() is None
    install(exported / "0", base, 0)
    wait_until(lambda: client.available_version() == 0, 90, what="version 0")
    assert_matches_canary(client.predict(CANARY_INPUTS).body["predictions"], exported / "0")


def test_missing_base_path_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, "-m", "chaoskit.serving", "--model-name", MODEL,
         "--model-base-path", str(missing), "--rest-port", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"chaoskit-serving: error: model base path {missing} does not exist"
    ]


@pytest.mark.parametrize("which", ["--rest-port", "--grpc-port"])
def test_port_in_use_exits_2_with_one_line(tmp_path, which):
    """Also the gRPC port, which is bound only after TensorFlow's import: checked before."""
    (tmp_path / "models").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--rest-port": "0", "--grpc-port": "0", which: str(port)}
        proc = subprocess.run(
            [sys.executable, "-m", "chaoskit.serving", "--model-name", MODEL,
             "--model-base-path", str(tmp_path / "models"),
             *[part for flag, value in ports.items() for part in (flag, value)]],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read model config {path}: No such file or directory"),
        ('{"model_version_policy": {"specific": {"versions": []}}}',
         "{path}: model_version_policy.specific.versions must be a non-empty list, got []"),
        ("{nope", "{path}: not valid JSON: "),
    ],
)  # fmt: skip
def test_bad_model_config_file_exits_2_with_one_line(tmp_path, content, needle):
    (tmp_path / "models").mkdir()
    path = tmp_path / "model.json"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "chaoskit.serving", "--model-name", MODEL,
         "--model-base-path", str(tmp_path / "models"), "--rest-port", "0",
         "--model-config-file", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaoskit-serving: error: ")
    assert needle.format(path=path) in lines[0]
