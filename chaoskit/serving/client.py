"""A small client for the TF Serving REST API (stdlib only, so probes stay cheap).

Used by the monitor, the load generator and tests; works against chaoskit's own
model server and against a real tensorflow/serving.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class Response:
    """One HTTP answer: status code, decoded JSON body (or ``{"error": text}``), and its
    headers (names lower-cased)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


class ServingClient:
    """Talks to one model server at ``host:port`` about one model."""

    protocol = "rest"

    def __init__(
        self, host: str, port: int, model: str, *, timeout: float = 5.0,
        signature_name: str | None = None, label: str | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.model = model
        self.timeout = timeout
        self.signature_name = signature_name
        """Sent with every ``:predict`` that names none (None: the server's default)."""
        self.label = label
        """The version label every ``:predict`` naming no version or label asks for
        (None: the default version); clients behind a quality gate ask for ``stable``."""

    def on_label(self, label: str) -> ServingClient:
        """The same server and model, predicting on version label *label*."""
        return ServingClient(self.host, self.port, self.model, timeout=self.timeout,
                             signature_name=self.signature_name, label=label)  # fmt: skip

    def _model_path(self, version: int | str | None, label: str | None = None) -> str:
        """``/v1/models/M``, ``.../versions/N`` or ``.../labels/L`` (both: TF Serving's 400)."""
        path = f"/v1/models/{self.model}"
        if version is not None:
            path += f"/versions/{version}"
        if label is not None:
            path += f"/labels/{quote(label, safe='')}"
        return path

    def request(
        self, method: str, path: str, body: bytes | None = None, *, timeout: float | None = None
    ) -> Response:
        """Send one request on a new connection; raises OSError on connect/read failure."""
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=self.timeout if timeout is None else timeout
        )
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            raw = answer.read()
        except http.client.HTTPException as e:
            raise OSError(f"bad HTTP answer from {self.host}:{self.port}: {e!r}") from e
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else {}
            if not isinstance(decoded, dict):
                decoded = {"error": f"unexpected JSON body: {raw[:200]!r}"}
        except ValueError:
            decoded = {"error": raw[:500].decode("utf-8", "replace")}
        headers = {k.lower(): v for k, v in answer.getheaders()}
        return Response(answer.status, decoded, headers)

    def status(
        self,
        version: int | str | None = None,
        *,
        label: str | None = None,
        timeout: float | None = None,
    ) -> Response:
        return self.request("GET", self._model_path(version, label), timeout=timeout)

    def metadata(self, version: int | str | None = None, *, label: str | None = None) -> Response:
        return self.request("GET", self._model_path(version, label) + "/metadata")

    def label_version(self, label: str, *, timeout: float | None = None) -> int | None:
        """The version *label* points at (metadata on the label), or None."""
        try:
            answer = self.request(
                "GET", self._model_path(None, label) + "/metadata", timeout=timeout
            )
        except OSError:
            return None
        version = answer.body.get("model_spec", {}).get("version") if answer.ok else None
        return int(version) if isinstance(version, str) and version.isdigit() else None

    def predict(
        self,
        instances: Any = None,
        *,
        inputs: Any = None,
        version: int | str | None = None,
        label: str | None = None,
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> Response:
        """POST ``:predict`` in row ("instances") or columnar ("inputs") form."""
        payload: dict[str, Any] = {}
        signature_name = signature_name or self.signature_name
        if signature_name is not None:
            payload["signature_name"] = signature_name
        if inputs is not None:
            payload["inputs"] = inputs
        else:
            payload["instances"] = instances
        body = json.dumps(payload).encode()
        if version is None and label is None:
            label = self.label
        path = self._model_path(version, label) + ":predict"
        return self.request("POST", path, body, timeout=timeout)

    def metrics(
        self, path: str = "/monitoring/prometheus/metrics"
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The server's Prometheus page parsed: (sample name, sorted labels) -> value.
        OSError when unreachable or not answered with 200 (TF Serving answers it only
        with a ``--monitoring_config_file`` that enables it)."""
        from prometheus_client.parser import text_string_to_metric_families

        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            text = answer.read().decode("utf-8", "replace")
        except http.client.HTTPException as e:
            raise OSError(f"bad HTTP answer from {self.host}:{self.port}: {e!r}") from e
        finally:
            conn.close()
        if answer.status != 200:
            raise OSError(f"{path} on {self.host}:{self.port} answered {answer.status}")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def available_versions(self, *, timeout: float | None = None) -> list[int]:
        """Every version in state AVAILABLE, ascending; none when it cannot be asked."""
        try:
            answer = self.status(timeout=timeout)
        except OSError:
            return []
        if not answer.ok:
            return []
        return sorted(
            int(v["version"])
            for v in answer.body.get("model_version_status", [])
            if v.get("state") == "AVAILABLE" and str(v.get("version", "")).isdigit()
        )

    def available_version(self, *, timeout: float | None = None) -> int | None:
        """The highest version in state AVAILABLE, or None (also when unreachable)."""
        versions = self.available_versions(timeout=timeout)
        return versions[-1] if versions else None
