"""TF Serving conformance over REST and gRPC: version policies, version labels,
``/versions/N`` and ``/labels/L`` routes, the gRPC ``PredictionService`` and
``ModelService`` (the rollback through ``HandleReloadConfigRequest``) and the exact error
answers and codes, run against chaoskit's model server and, when one is reachable,
against a real tensorflow/serving with the same cases.

Answers are compared as parsed JSON, never as bytes (TF Serving pretty-prints).  To run
the cases against a real tensorflow/serving, start one on a directory this test may
write, with a model config file it polls (the test writes the versions and the config,
as protobuf text, there)::

    mkdir -p /tmp/tfs && echo 'model_config_list {}' > /tmp/tfs/models.config
    docker run --rm -p 8501:8501 -v /tmp/tfs:/tfs tensorflow/serving \\
        --model_config_file=/tfs/models.config --model_config_file_poll_wait_seconds=1
    TFSERVING_URL=http://127.0.0.1:8501 TFSERVING_BASE=/tmp/tfs TFSERVING_BASE_IN_SERVER=/tfs \\
        pytest tests/integration/test_serving_conformance.py

(add ``-p 8500:8500`` and ``TFSERVING_GRPC=127.0.0.1:8500`` for the gRPC cases).

Known, deliberate difference (not tested here): a request for the newest version of
a model with no version loaded yet is 503 on chaoskit's server, 404 on TF Serving.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from chaoskit import model as ref
from chaoskit.atomic import atomic_write_text
from chaoskit.journal import JOURNAL_ENV, read_journal
from chaoskit.serving.client import Response, ServingClient
from chaoskit.serving.config import ServingConfig, VersionPolicy, model_server_config_text
from chaoskit.stack.ports import free_port
from chaoskit.waiting import wait_until

pytestmark = pytest.mark.integration

M = "reference"
VERSIONS = (1, 2, 3)
POLL = 0.2  # chaoskit's version and config poll period here
PREDICT_BODY = json.dumps({"instances": ref.CANARY_INPUTS}).encode()


def specific(*versions: int, **labels: int) -> ServingConfig:
    return ServingConfig(VersionPolicy("specific", versions=frozenset(versions)), labels)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1, 2 and 3, each with its own weights, exported by chaoskit's model code."""
    root = tmp_path_factory.mktemp("exported")
    for version in VERSIONS:
        module = ref.serving_module(ref.build_model(seed=10 * version))
        ref.export_saved_model(module, root, version, step=version)
    return root


def golden(exported: Path, version: int) -> list[list[float]]:
    return ref.load_canary(exported / str(version))["outputs"]


class Target:
    """One server under test: its REST client, and how to hand it a model config."""

    name = ""
    client: ServingClient
    grpc: Any = None
    """Its gRPC client (a GrpcServingClient), when it serves gRPC."""
    base_in_server = ""
    """The model base path as the server sees it (a ReloadConfigRequest names it)."""
    config_poll = 1.0

    def write_config(self, config: ServingConfig) -> None:
        raise NotImplementedError

    def refusals(self) -> int | None:
        """How many configs it has refused so far, when it tells (None: it does not)."""
        return None

    def settled(self) -> bool:
        """The config last written was read (when the server tells: a gRPC reload must
        not race the file's poll, which would replace what it set)."""
        return True

    def close(self) -> None:
        pass


class ChaoskitTarget(Target):
    name = "chaoskit"
    config_poll = POLL

    def __init__(self, root: Path, exported: Path) -> None:
        self.base = root / "models"
        shutil.copytree(exported, self.base)
        self.config_file = root / "model-config.json"
        self.journal = root / "journal.jsonl"
        self.write_config(ServingConfig(VersionPolicy("all")))
        port_file = root / "port"
        grpc_port = free_port()
        self.base_in_server = str(self.base)
        self.stderr = (root / "stderr.txt").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "chaoskit.serving", "--model-name", M,
                "--model-base-path", str(self.base), "--rest-port", "0",
                "--port-file", str(port_file), "--poll-interval", str(POLL),
                "--model-config-file", str(self.config_file),
                "--model-config-file-poll-wait-seconds", str(POLL),
                "--grpc-port", str(grpc_port),
            ],
            env={**os.environ, JOURNAL_ENV: str(self.journal)},
            stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True,
        )  # fmt: skip
        port = wait_until(lambda: port_file.exists() and port_file.read_text(), 30, what="port")
        self.client = ServingClient("127.0.0.1", int(port), M, timeout=30)
        from chaoskit.serving.grpc_client import GrpcServingClient

        self.grpc = GrpcServingClient("127.0.0.1", grpc_port, M, timeout=30)

    def write_config(self, config: ServingConfig) -> None:
        self.wanted = json.loads(json.dumps(config.as_json()))
        atomic_write_text(self.config_file, json.dumps(config.as_json()), durable=False)

    def settled(self) -> bool:
        """The newest config the server took from the file is the one written (its poll
        skips a file whose bytes it took last, so "newest" and not "since the write")."""
        taken = [e for e in self.events("serving.config_applied")
                 if e.get("path") == str(self.config_file)]  # fmt: skip
        return bool(taken) and {k: taken[-1][k] for k in self.wanted} == self.wanted

    def events(self, name: str) -> list[dict]:
        if not self.journal.exists():
            return []
        return [e for e in read_journal(self.journal) if e["event"] == name]

    def refusals(self) -> int | None:
        return len(self.events("serving.config_refused"))

    def close(self) -> None:
        self.grpc.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0
        self.stderr.close()


class TFServingTarget(Target):
    """A tensorflow/serving someone started (see the module docstring)."""

    name = "tensorflow-serving"

    def __init__(self, url: str, base: Path, base_in_server: str, exported: Path) -> None:
        parts = urlsplit(url)
        self.client = ServingClient(parts.hostname or "127.0.0.1", parts.port or 8501, M, 30)
        self.config_file = base / "models.config"
        self.base_in_server = f"{base_in_server.rstrip('/')}/{M}"
        shutil.rmtree(base / M, ignore_errors=True)
        shutil.copytree(exported, base / M)
        self.config_poll = float(os.environ.get("TFSERVING_CONFIG_POLL", "1"))
        grpc_at = os.environ.get("TFSERVING_GRPC")
        if grpc_at:
            from chaoskit.serving.grpc_client import GrpcServingClient

            host, _, grpc_port = grpc_at.rpartition(":")
            self.grpc = GrpcServingClient(host or "127.0.0.1", int(grpc_port), M, timeout=30)

    def write_config(self, config: ServingConfig) -> None:
        text = model_server_config_text(M, self.base_in_server, config)
        atomic_write_text(self.config_file, text, durable=False)


@pytest.fixture(scope="module", params=["chaoskit", "tensorflow-serving"])
def target(
    request: pytest.FixtureRequest, exported: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    made: Target
    if request.param == "chaoskit":
        made = ChaoskitTarget(tmp_path_factory.mktemp("chaoskit"), exported)
    else:
        url, base = os.environ.get("TFSERVING_URL"), os.environ.get("TFSERVING_BASE")
        if not url:
            pytest.skip("TFSERVING_URL not set: no real tensorflow/serving to run the cases on")
        if not base:
            pytest.skip("TFSERVING_BASE not set: the directory tensorflow/serving polls")
        inside = os.environ.get("TFSERVING_BASE_IN_SERVER", base)
        made = TFServingTarget(url, Path(base), inside, exported)
    try:
        configure(made, ServingConfig(VersionPolicy("all")), available={1, 2, 3})
        yield made
    finally:
        made.close()


def available_versions(client: ServingClient) -> set[int]:
    try:
        answer = client.status(timeout=5)
    except OSError:
        return set()
    return {
        int(s["version"])
        for s in answer.body.get("model_version_status", [])
        if s.get("state") == "AVAILABLE"
    }


def configure(target: Target, config: ServingConfig, *, available: set[int]) -> None:
    """Write *config* and wait until exactly *available* serve and its labels point."""
    target.write_config(config)

    def arrived() -> bool:
        if not target.settled() or available_versions(target.client) != available:
            return False
        return all(target.client.label_version(k) == v for k, v in config.labels.items())

    wait_until(arrived, 90, interval=0.05, what=f"{target.name}: {config.as_json()}")


def stays(condition: Callable[[], bool], seconds: float) -> bool:
    """True when *condition* holds at every look for *seconds* (a negative check)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.05)
    return condition()


def predictions(answer: Response) -> list[list[float]]:
    assert answer.status == 200, answer.body
    return answer.body["predictions"]


def assert_is(rows: list[list[float]], want: list[list[float]]) -> None:
    assert [v for r in rows for v in r] == pytest.approx([v for r in want for v in r], abs=1e-4)


def answered_by(rows: list[list[float]], exported: Path) -> int | None:
    flat = [v for r in rows for v in r]
    for version in VERSIONS:
        if flat == pytest.approx([v for r in golden(exported, version) for v in r], abs=1e-4):
            return version
    return None


def test_policies_latest_all_and_specific(target, exported):
    configure(target, ServingConfig(), available={3})
    assert_is(predictions(target.client.predict(ref.CANARY_INPUTS)), golden(exported, 3))
    configure(target, ServingConfig(VersionPolicy("latest", 2)), available={2, 3})
    configure(target, ServingConfig(VersionPolicy("all")), available={1, 2, 3})
    for version in VERSIONS:
        answer = target.client.predict(ref.CANARY_INPUTS, version=version)
        assert_is(predictions(answer), golden(exported, version))
    configure(target, specific(1, 3), available={1, 3})
    assert target.client.status(2).body["model_version_status"][0]["state"] == "END"


def test_specific_serves_what_exists_and_reports_the_rest_as_not_found(target, exported):
    configure(target, specific(2, 9), available={2})
    client = target.client
    assert_is(predictions(client.predict(ref.CANARY_INPUTS)), golden(exported, 2))
    assert client.status(9).status == 404
    assert client.status(9).body == {"error": f"Could not find version 9 of model {M}"}
    answer = client.predict(ref.CANARY_INPUTS, version=9)
    assert (answer.status, answer.body) == (
        404, {"error": f"Servable not found for request: Specific({M}, 9)"}
    )  # fmt: skip
    if isinstance(target, ChaoskitTarget):
        assert 9 in [e["version"] for e in target.events("serving.version_not_found")]


def test_labels_on_status_metadata_and_predict(target, exported):
    configure(target, specific(2, 3), available={2, 3})
    configure(target, specific(2, 3, stable=2, canary=3), available={2, 3})
    client = target.client
    assert_is(predictions(client.predict(ref.CANARY_INPUTS, label="stable")), golden(exported, 2))
    assert_is(predictions(client.predict(ref.CANARY_INPUTS, label="canary")), golden(exported, 3))
    columnar = client.predict(inputs=ref.CANARY_INPUTS, label="stable")
    assert columnar.status == 200 and set(columnar.body) == {"outputs"}
    meta = client.metadata(label="stable")
    assert meta.status == 200 and meta.body["model_spec"] == {
        "name": M, "signature_name": "", "version": "2"
    }  # fmt: skip
    assert meta.body["metadata"] == client.metadata(2).body["metadata"]
    # TF Serving's status ignores a label: the status of every version
    assert client.status(label="stable").body == client.status().body


def test_routes_ignore_case(target, exported):
    configure(target, specific(2, 3, stable=2), available={2, 3})
    client = target.client
    for path in (f"/V1/MODELS/{M}/LABELS/stable:predict", f"/v1/Models/{M}/Versions/2:predict"):
        assert_is(predictions(client.request("POST", path, PREDICT_BODY)), golden(exported, 2))
    assert client.request("GET", f"/V1/MODELS/{M}/VERSIONS/3").body == client.status(3).body
    meta = client.request("GET", f"/v1/MODELS/{M}/labels/stable/metadata")
    assert meta.body["model_spec"]["version"] == "2"


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/other", 404, "Could not find any versions of model other"),
        ("GET", f"/v1/models/{M}/versions/9", 404, f"Could not find version 9 of model {M}"),
        ("GET", "/v1/models/other/metadata", 404, "Servable not found for request: Latest(other)"),
        ("POST", "/v1/models/other:predict", 404, "Servable not found for request: Latest(other)"),
        ("POST", f"/v1/models/{M}/versions/9:predict", 404,
         f"Servable not found for request: Specific({M}, 9)"),
        ("GET", f"/v1/models/{M}/versions/99999999999999999999", 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
        ("POST", f"/v1/models/{M}/labels/nope:predict", 400,
         "Unrecognized servable version label: nope"),
        ("GET", f"/v1/models/{M}/labels/nope/metadata", 400,
         "Unrecognized servable version label: nope"),
        ("POST", f"/v1/models/{M}/versions/2/labels/stable:predict", 400,
         f"Malformed request: POST /v1/models/{M}/versions/2/labels/stable:predict"),
        ("GET", f"/v1/models/{M}/versions/2/labels/stable/metadata", 400,
         f"Malformed request: GET /v1/models/{M}/versions/2/labels/stable/metadata"),
        ("GET", f"/v1/models/{M}:predict", 400, f"Malformed request: GET /v1/models/{M}:predict"),
        ("POST", f"/v1/models/{M}:PREDICT", 400,
         f"Malformed request: POST /v1/models/{M}:PREDICT"),
        ("POST", f"/v1/models/{M}/versions/x:predict", 400,
         f"Malformed request: POST /v1/models/{M}/versions/x:predict"),
    ],
)  # fmt: skip
def test_error_answers(target, method, path, status, error):
    if method == "GET" or "/versions/2/" in path:  # the labels must exist for the others
        configure(target, specific(2, 3, stable=2), available={2, 3})
    body = PREDICT_BODY if method == "POST" else None
    answer = target.client.request(method, path, body)
    assert (answer.status, answer.body) == (status, {"error": error})


def test_a_label_on_a_version_not_loaded_is_refused_and_the_old_config_stays(target, exported):
    configure(target, specific(2, 3, stable=3), available={2, 3})
    before = target.refusals()
    target.write_config(specific(2, 3, stable=1))  # 1 exists but is not loaded
    client = target.client
    if before is not None:
        wait_until(lambda: (target.refusals() or 0) > before, 30, what="the refusal")
        log = Path(target.stderr.name).read_text()
        assert "not currently available for inference" in log and "version 1 of model" in log
    else:  # TF Serving only logs it: the label must stay for a few config polls
        assert stays(lambda: client.label_version("stable") == 3, 3 * target.config_poll)
    assert client.label_version("stable") == 3
    assert_is(predictions(client.predict(ref.CANARY_INPUTS, label="stable")), golden(exported, 3))


def moved_under_load(client: Any, exported: Path, move: Callable[[], None]) -> list[int | None]:
    """Predict on ``stable`` without pause while *move* switches it: the version each
    answer came from, in order; every answer must be one (no request may fail)."""
    answers: list[int | None] = []
    errors: list[Response] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            answer = client.predict(ref.CANARY_INPUTS, label="stable")
            if answer.ok:
                answers.append(answered_by(answer.body["predictions"], exported))
            else:
                errors.append(answer)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        wait_until(lambda: len(answers) >= 3, 30, what="answers before the switch")
        move()
        seen = len(answers)
        wait_until(lambda: len(answers) >= seen + 3, 30, what="answers after the switch")
    finally:
        done.set()
        worker.join(timeout=30)
    assert errors == []
    return answers


def test_moving_stable_back_under_load_answers_whole_versions(target, exported):
    """The rollback: stable 3 -> 2 with both loaded; no request fails or mixes versions."""
    configure(target, specific(2, 3, stable=3), available={2, 3})
    answers = moved_under_load(target.client, exported, lambda: configure(
        target, specific(2, 3, stable=2), available={2, 3}))
    assert set(answers) <= {2, 3} and answers[0] == 3 and answers[-1] == 2
    assert answers == sorted(answers, reverse=True)  # 3s, then 2s: never back


# -- gRPC ------------------------------------------------------------------------------


def grpc_of(target: Target) -> Any:
    if target.grpc is None:
        pytest.skip(f"{target.name}: no gRPC port given (TFSERVING_GRPC)")
    return target.grpc


def test_grpc_answers_as_rest_does(target, exported):
    """Predict, GetModelMetadata and GetModelStatus over gRPC: the same answers as REST,
    by version number, by label and by default."""
    grpc = grpc_of(target)
    configure(target, specific(2, 3, stable=2), available={2, 3})
    rest = target.client
    for asked in ({}, {"version": 3}, {"label": "stable"}):
        got = grpc.predict(ref.CANARY_INPUTS, **asked)
        assert got.status == 200, got.body
        assert got.body == rest.predict(ref.CANARY_INPUTS, **asked).body
    assert_is(predictions(grpc.predict(ref.CANARY_INPUTS, label="stable")), golden(exported, 2))
    columnar = grpc.predict(inputs={"x": ref.CANARY_INPUTS}, version=2)
    assert columnar.body == rest.predict(inputs=ref.CANARY_INPUTS, version=2).body
    meta, want = grpc.metadata(label="stable"), rest.metadata(label="stable")
    assert meta.body["model_spec"] == want.body["model_spec"]
    got_sig = meta.body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    want_sig = want.body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert got_sig["method_name"] == want_sig["method_name"]
    for side in ("inputs", "outputs"):
        assert {k: (v["dtype"], [d["size"] for d in v["tensor_shape"]["dim"]])
                for k, v in got_sig[side].items()} == \
               {k: (v["dtype"], [d["size"] for d in v["tensor_shape"]["dim"]])
                for k, v in want_sig[side].items()}  # fmt: skip
    for version in (None, 2, 1):
        assert grpc.status(version).body == rest.status(version).body


@pytest.mark.parametrize(
    ("call", "code", "error"),
    [
        ("status:other", "NOT_FOUND", "Could not find any versions of model other"),
        ("status:9", "NOT_FOUND", f"Could not find version 9 of model {M}"),
        ("predict-model:other", "NOT_FOUND", "Servable not found for request: Latest(other)"),
        ("predict:9", "NOT_FOUND", f"Servable not found for request: Specific({M}, 9)"),
        ("metadata:9", "NOT_FOUND", f"Servable not found for request: Specific({M}, 9)"),
        ("predict-label:nope", "INVALID_ARGUMENT", "Unrecognized servable version label: nope"),
        ("predict-signature:nope", "INVALID_ARGUMENT",
         'Serving signature name: "nope" not found in signature def'),
    ],
)  # fmt: skip
def test_grpc_error_codes(target, call, code, error):
    grpc = grpc_of(target)
    configure(target, specific(2, 3, stable=2), available={2, 3})
    kind, _, arg = call.partition(":")
    other = type(grpc)(grpc.host, grpc.port, arg)  # a client of model *arg*
    if kind == "status":
        answer = grpc.status(int(arg)) if arg.isdigit() else other.status()
    elif kind == "metadata":
        answer = grpc.metadata(int(arg))
    elif kind == "predict-model":
        other._inputs = grpc._input_specs(None)  # rows need the input's name
        answer = other.predict(ref.CANARY_INPUTS)
    elif kind == "predict-label":
        answer = grpc.predict(ref.CANARY_INPUTS, label=arg)
    elif kind == "predict-signature":
        answer = grpc.predict(inputs={"x": ref.CANARY_INPUTS}, signature_name=arg)
    else:
        answer = grpc.predict(ref.CANARY_INPUTS, version=int(arg))
    other.close()
    assert (answer.headers["grpc-status"], answer.body["error"]) == (code, error)
    rest_status = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400}[code]
    assert answer.status == rest_status  # as TF Serving's REST API maps the same error


def test_grpc_refuses_bad_inputs_by_name_type_and_shape(target):
    """A request that cannot run is INVALID_ARGUMENT, naming what is wrong."""
    grpc = grpc_of(target)
    configure(target, specific(2, 3, stable=2), available={2, 3})
    wrong_name = grpc.predict(inputs={"nope": ref.CANARY_INPUTS}, version=2)
    assert wrong_name.headers["grpc-status"] == "INVALID_ARGUMENT"
    assert "nope" in wrong_name.body["error"]
    import numpy as np

    as_double = grpc.predict(inputs={"x": np.asarray(ref.CANARY_INPUTS, dtype=np.float64)},
                             version=2)  # fmt: skip
    assert as_double.headers["grpc-status"] == "INVALID_ARGUMENT", as_double.body
    said = as_double.body["error"].lower()  # TF Serving: "float", chaoskit: "DT_FLOAT"
    assert "float" in said and "double" in said
    short_row = grpc.predict(inputs={"x": [[1.0, 2.0]]}, version=2)
    assert short_row.headers["grpc-status"] == "INVALID_ARGUMENT", short_row.body


def test_rollback_through_handle_reload_config_request(target, exported):
    """The quality guard's rollback as a real tensorflow/serving takes it: stable 3 -> 2
    by ``HandleReloadConfigRequest`` under gRPC load; every answer is one whole version,
    3s then 2s, none fails; a label on a version not loaded is refused
    (FAILED_PRECONDITION) and the config in force stays."""
    grpc = grpc_of(target)
    configure(target, specific(2, 3), available={2, 3})
    pinned = grpc.reload_config(specific(2, 3, stable=3), target.base_in_server)
    assert pinned.status == 200, pinned.body
    assert grpc.label_version("stable") == 3

    def roll_back() -> None:
        rolled = grpc.reload_config(specific(2, 3, stable=2), target.base_in_server)
        assert rolled.status == 200, rolled.body

    answers = moved_under_load(grpc, exported, roll_back)
    assert set(answers) <= {2, 3} and answers[0] == 3 and answers[-1] == 2
    assert answers == sorted(answers, reverse=True)
    assert grpc.label_version("stable") == 2 and target.client.label_version("stable") == 2

    refused = grpc.reload_config(specific(2, 3, stable=1), target.base_in_server)
    assert refused.headers["grpc-status"] == "FAILED_PRECONDITION", refused.body
    assert "not currently available for inference" in refused.body["error"]
    assert grpc.label_version("stable") == 2
    if isinstance(target, ChaoskitTarget):  # one model, from one base path: says so
        elsewhere = grpc.reload_config(specific(2), "/nowhere")
        assert elsewhere.headers["grpc-status"] == "INVALID_ARGUMENT"
        assert "/nowhere" in elsewhere.body["error"]


def test_grpc_requests_are_counted_with_their_entrypoint(target):
    grpc = grpc_of(target)
    if not isinstance(target, ChaoskitTarget):
        pytest.skip("tensorflow/serving's metrics page needs a monitoring config")
    configure(target, specific(2, 3, stable=2), available={2, 3})
    key = (":tensorflow:serving:request_latency_count",
           (("API", "predict"), ("entrypoint", "GRPC"), ("model_name", M)))  # fmt: skip
    before = target.client.metrics().get(key, 0)
    assert grpc.predict(ref.CANARY_INPUTS, version=2).ok
    assert grpc.predict(ref.CANARY_INPUTS, version=9).status == 404
    assert target.client.metrics()[key] == before + 2
    not_found = (":tensorflow:serving:request_count", (("model_name", M), ("status", "NOT_FOUND")))
    assert target.client.metrics()[not_found] >= 1
