"""A client for TF Serving's gRPC API, answering as :class:`~chaoskit.serving.client.ServingClient`
does over REST (a :class:`Response` with an HTTP-like status and the REST JSON body), so a
probe or a test can ask either way and compare.

Works against chaoskit's model server and a real tensorflow/serving.  The channel is
opened at the first call and kept; ``close`` ends it.  The stubs import TensorFlow.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from chaoskit.model import import_tensorflow

tf = import_tensorflow(threads=None)  # quietly, before the stubs below import it

from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from chaoskit.errors import StackError  # noqa: E402
from chaoskit.serving import tensors  # noqa: E402
from chaoskit.serving.client import Response  # noqa: E402
from chaoskit.serving.config import ServingConfig  # noqa: E402

HTTP_OF_CODE = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}  # fmt: skip
"""TF Serving's ``ToHTTPStatusCode``: the status its REST API answers the same error with."""
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
             ("grpc.max_reconnect_backoff_ms", 500)]  # fmt: skip
"""A probe must see a server that is back within a probe or two, not after gRPC's
default reconnect backoff (1 s growing to 120 s)."""


def _answer(error: grpc.RpcError) -> Response:
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise TimeoutError(f"gRPC call timed out: {error.details()}")
    return Response(HTTP_OF_CODE.get(code, 500), {"error": error.details() or code.name},
                    {"grpc-status": code.name})  # fmt: skip


def _row_inputs(instances: Any, specs: dict[str, tensors.InputSpec],
                model: str) -> dict[str, Any]:  # fmt: skip
    """REST's row form as named tensors: rows of one input, or rows naming each input."""
    rows = list(instances)
    if rows and all(isinstance(row, dict) for row in rows):
        missing = sorted({name for row in rows for name in specs if name not in row})
        if missing:
            raise StackError(f"rows of {model} lack the inputs {missing}")
        return {name: [row[name] for row in rows] for name in specs}
    if len(specs) != 1:
        raise StackError(f"rows of one value need a signature with one input; {model} has "
                         f"{sorted(specs)}: give each row as an object naming them")  # fmt: skip
    return {next(iter(specs)): rows}


class GrpcServingClient:
    """Talks to one model server's gRPC port at ``host:port`` about one model."""

    protocol = "grpc"

    def __init__(
        self, host: str, port: int, model: str, *, timeout: float = 5.0,
        signature_name: str | None = None, label: str | None = None,
    ) -> None:  # fmt: skip
        self.host, self.port, self.model = host, port, model
        self.timeout = timeout
        self.signature_name = signature_name
        self.label = label
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stubs_made: tuple[Any, Any] | None = None
        self._inputs: dict[str, tensors.InputSpec] | None = None

    def _stubs(self) -> tuple[Any, Any]:
        """(PredictionService, ModelService) stubs on the one channel, made at first use."""
        with self._lock:
            if self._channel is None or self._stubs_made is None:
                target = f"[{self.host}]:{self.port}" if ":" in self.host else \
                    f"{self.host}:{self.port}"  # fmt: skip
                channel = grpc.insecure_channel(target, options=RECONNECT)
                self._channel = channel
                self._stubs_made = (prediction_service_pb2_grpc.PredictionServiceStub(channel),
                                    model_service_pb2_grpc.ModelServiceStub(channel))
            return self._stubs_made

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel, self._stubs_made = None, None

    def _spec(self, into: Any, version: int | str | None, label: str | None,
              signature_name: str | None = None) -> None:  # fmt: skip
        into.name = self.model
        if version is not None:
            into.version.value = int(version)
        if label is not None:
            into.version_label = label
        if signature_name:
            into.signature_name = signature_name

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            return _answer(e)

    def status(self, version: int | str | None = None, *,
               timeout: float | None = None) -> Response:  # fmt: skip
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version, None)
        got = self._call(self._stubs()[1].GetModelStatus, request, timeout)
        if isinstance(got, Response):
            return got
        body = json_format.MessageToDict(got, preserving_proto_field_name=True)
        for state in body.get("model_version_status", []):  # proto3 JSON omits defaults
            state.setdefault("version", "0")
            state.setdefault("state", "UNKNOWN")
            status = state.setdefault("status", {})
            status.setdefault("error_code", "OK")
            status.setdefault("error_message", "")
        return Response(200, body)

    def metadata(self, version: int | str | None = None, *, label: str | None = None,
                 timeout: float | None = None) -> Response:  # fmt: skip
        """``signature_def`` metadata, as the REST route answers it."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version, label)
        got = self._call(self._stubs()[0].GetModelMetadata, request, timeout)
        if isinstance(got, Response):
            return got

        defs = get_model_metadata_pb2.SignatureDefMap()
        got.metadata["signature_def"].Unpack(defs)
        return Response(200, {
            "model_spec": {"name": got.model_spec.name, "signature_name": "",
                           "version": str(got.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(
                defs, preserving_proto_field_name=True)},
        })  # fmt: skip

    def _input_specs(self, timeout: float | None) -> dict[str, tensors.InputSpec]:
        """The default signature's inputs (asked once): rows need their input's name."""
        if self._inputs is None:
            answer = self.metadata(timeout=timeout)
            if not answer.ok:
                raise OSError(f"cannot learn the inputs of {self.model}: {answer.body['error']}")
            sigs = answer.body["metadata"]["signature_def"]["signature_def"]
            sig = sigs.get(self.signature_name or tensors.DEFAULT_SIGNATURE, {})
            self._inputs = {
                name: tensors.InputSpec(
                    name, tf.as_dtype(types_pb2.DataType.Value(info["dtype"])).as_numpy_dtype, None)
                for name, info in sig.get("inputs", {}).items()
            }
        return self._inputs

    def predict(
        self, instances: Any = None, *, inputs: Any = None, version: int | str | None = None,
        label: str | None = None, signature_name: str | None = None,
        timeout: float | None = None,
    ) -> Response:  # fmt: skip
        """``Predict``: *instances* (rows, one input) or *inputs* (name -> values); the
        answer's body is the REST one (``predictions`` / ``outputs``)."""
        if version is None and label is None:
            label = self.label
        signature_name = signature_name or self.signature_name
        specs = self._input_specs(timeout)
        fmt = tensors.ROW if inputs is None else tensors.COLUMNAR
        if inputs is None:
            inputs = _row_inputs(instances, specs, self.model)
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, label, signature_name)
        for name, values in inputs.items():
            spec = specs.get(name)
            dtype = None if spec is None else spec.dtype
            # an array is sent as it is typed; lists take the signature's type
            array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=dtype)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        got = self._call(self._stubs()[0].Predict, request, timeout)
        if isinstance(got, Response):
            return got
        outputs = {name: tf.make_ndarray(proto) for name, proto in got.outputs.items()}
        return Response(200, tensors.response_body(fmt, outputs),
                        {"grpc-status": "OK", "model-version": str(got.model_spec.version.value)})

    def reload_config(self, config: ServingConfig, base_path: str, *,
                      timeout: float | None = None) -> Response:  # fmt: skip
        """``HandleReloadConfigRequest`` with this model's policy and labels: how a real
        tensorflow/serving switches them at run time."""
        request = model_management_pb2.ReloadConfigRequest()
        model = request.config.model_config_list.config.add()
        model.name, model.base_path, model.model_platform = self.model, base_path, "tensorflow"
        json_format.ParseDict(config.as_json(), model, ignore_unknown_fields=False)
        got = self._call(self._stubs()[1].HandleReloadConfigRequest, request, timeout)
        if isinstance(got, Response):
            return got
        return Response(200, json_format.MessageToDict(got, preserving_proto_field_name=True))

    def label_version(self, label: str, *, timeout: float | None = None) -> int | None:
        """The version *label* points at, or None."""
        try:
            answer = self.metadata(label=label, timeout=timeout)
        except OSError:
            return None
        version = answer.body["model_spec"]["version"] if answer.ok else None
        return int(version) if isinstance(version, str) and version.isdigit() else None
