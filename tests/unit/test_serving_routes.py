"""TF Serving's REST routes and error answers, on a real socket; a fake loader stands in
for TensorFlow (the predictions themselves: tests/integration/test_serving_conformance.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.serving.client import ServingClient
from chaoskit.serving.config import ServingConfig, VersionPolicy
from chaoskit.serving.server import ServingHTTPServer
from chaoskit.serving.store import ModelStore, Servable

M = "m"


def fake_loader(version: int, path: Path) -> Servable:
    return Servable(version, path, object(), {}, {"serving_default": {"v": version}})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[ServingClient, ModelStore]]:
    base = tmp_path / "models"
    for v in (1, 2, 3):
        (base / str(v)).mkdir(parents=True)
    store = ModelStore(M, base, None, loader=fake_loader)
    store.apply_config(ServingConfig(VersionPolicy("specific", versions=frozenset({2, 3}))))
    store.poll_once()
    assert (
        store.apply_config(ServingConfig(store.config.policy, {"stable": 2, "canary": 3})) is None
    )
    httpd = ServingHTTPServer(("127.0.0.1", 0), store)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield ServingClient("127.0.0.1", httpd.server_address[1], M, timeout=5), store
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def spec_version(answer) -> str:
    assert answer.status == 200, answer.body
    return answer.body["model_spec"]["version"]


def test_metadata_by_latest_version_and_label(api):
    client, _ = api
    assert spec_version(client.metadata()) == "3"
    assert spec_version(client.metadata(2)) == "2"
    assert spec_version(client.metadata(label="stable")) == "2"
    assert client.label_version("canary") == 3 and client.label_version("nope") is None
    body = client.metadata(label="stable").body
    assert body["metadata"]["signature_def"]["signature_def"] == {"serving_default": {"v": 2}}


def test_status_ignores_a_label_as_tf_serving_does(api):
    client, _ = api
    whole = client.status()
    assert [s["version"] for s in whole.body["model_version_status"]] == ["3", "2"]
    assert client.status(label="stable").body == whole.body
    assert client.status(label="no-such-label").body == whole.body
    assert [s["version"] for s in client.status(2).body["model_version_status"]] == ["2"]


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/versions/3", 400, "Missing model name in request."),
        ("GET", "/v1/models/other", 404, "Could not find any versions of model other"),
        ("GET", "/v1/models/m/versions/7", 404, "Could not find version 7 of model m"),
        ("GET", "/v1/models/m/versions/1", 404, "Could not find version 1 of model m"),
        ("GET", "/v1/models/other/metadata", 404, "Servable not found for request: Latest(other)"),
        ("GET", "/v1/models/m/versions/1/metadata", 404,
         "Servable not found for request: Specific(m, 1)"),
        ("GET", "/v1/models/m/labels/blue/metadata", 400,
         "Unrecognized servable version label: blue"),
        ("GET", "/v1/models/other/labels/stable/metadata", 400,
         "Unrecognized servable version label: stable"),
        ("POST", "/v1/models/m/labels/blue:predict", 400,
         "Unrecognized servable version label: blue"),
        ("POST", "/v1/models/other:predict", 404, "Servable not found for request: Latest(other)"),
        ("POST", "/v1/models/m/versions/1:predict", 404,
         "Servable not found for request: Specific(m, 1)"),
        ("GET", "/v1/models/m/versions/99999999999999999999", 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
        ("POST", "/v1/models/m/versions/99999999999999999999:predict", 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
        ("GET", "/v1/models/m/versions/abc", 400,
         "Malformed request: GET /v1/models/m/versions/abc"),
        ("POST", "/v1/models/m/versions/2/labels/stable:predict", 400,
         "Malformed request: POST /v1/models/m/versions/2/labels/stable:predict"),
        ("GET", "/v1/models/m/versions/2/labels/stable", 400,
         "Malformed request: GET /v1/models/m/versions/2/labels/stable"),
        ("POST", "/v1/models/m:PREDICT", 400, "Malformed request: POST /v1/models/m:PREDICT"),
        ("POST", "/v1/models/m", 400, "Malformed request: POST /v1/models/m"),
        ("GET", "/v1/models/m:predict", 400, "Malformed request: GET /v1/models/m:predict"),
        ("GET", "/v1/models/m/", 400, "Malformed request: GET /v1/models/m/"),
        ("PUT", "/v1/models/m", 400, "Malformed request: PUT /v1/models/m"),
        ("GET", "/v2/models/m", 404, "Malformed request: GET /v2/models/m"),
    ],
)  # fmt: skip
def test_error_answers_are_tf_servings(api, method, path, status, error):
    client, _ = api
    answer = client.request(method, path, b"{}" if method == "POST" else None)
    assert (answer.status, answer.body) == (status, {"error": error})


def test_routes_ignore_case_but_the_verb_and_metadata_are_compared_as_written(api):
    client, _ = api
    assert spec_version(client.request("GET", "/V1/MODELS/m/LABELS/canary/metadata")) == "3"
    assert spec_version(client.request("GET", "/v1/Models/m/Versions/2/metadata")) == "2"
    assert client.request("GET", "/v1/models/M").status == 404  # the name is case-sensitive
    upper = client.request("GET", "/v1/models/m/METADATA")  # TF Serving: the status
    assert upper.status == 200 and "model_version_status" in upper.body
    answer = client.request("POST", "/V1/MODELS/m/LABELS/nope:predict", b"{}")
    assert answer.body == {"error": "Unrecognized servable version label: nope"}


def test_percent_encoded_label_and_model_names_are_decoded(api):
    client, store = api
    error = store.apply_config(ServingConfig(store.config.policy, {"blue green": 3}))
    assert error is None
    assert spec_version(client.request("GET", "/v1/models/m/labels/blue%20green/metadata")) == "3"
    assert client.label_version("blue green") == 3
    assert spec_version(client.request("GET", "/v1/models/%6D/metadata")) == "3"


def test_inference_requests_are_counted_and_timed_under_tf_servings_names(api):
    client, _ = api
    count = ":tensorflow:serving:request_count"
    assert not [k for k in client.metrics() if k[0] == count]
    for _ in range(3):  # answered before TensorFlow would be imported
        assert client.request("POST", f"/v1/models/{M}:predict", b"{").status == 400
    assert client.predict([[1.0]], version=9).status == 404
    assert ServingClient(client.host, client.port, "other").predict([[1.0]]).status == 404
    assert client.metadata().status == 200  # not an inference request: not counted
    metrics = client.metrics()
    counts = {labels: v for (name, labels), v in metrics.items() if name == count}
    assert counts == {
        (("model_name", M), ("status", "INVALID_ARGUMENT")): 3.0,
        (("model_name", M), ("status", "NOT_FOUND")): 1.0,
        (("model_name", "other"), ("status", "NOT_FOUND")): 1.0,
    }
    latency = ":tensorflow:serving:request_latency"
    labels = (("API", "predict"), ("entrypoint", "REST"), ("model_name", M))
    assert metrics[(f"{latency}_count", labels)] == 4.0
    assert metrics[(f"{latency}_bucket", (*labels[:2], ("le", "+Inf"), labels[2]))] == 4.0
    assert metrics[(f"{latency}_bucket", (*labels[:2], ("le", "10"), labels[2]))] <= 4.0
    assert 0 < metrics[(f"{latency}_sum", labels)] < 4 * 5e6  # microseconds, each < 5 s
    page = client.request("GET", "/monitoring/prometheus/metrics")
    assert page.status == 200 and page.headers["content-type"] == "text/plain"
    with pytest.raises(OSError, match="answered 404"):
        client.metrics("/monitoring/elsewhere")
