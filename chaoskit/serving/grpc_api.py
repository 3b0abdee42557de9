"""The gRPC side of the model server: TF Serving's ``PredictionService`` and ``ModelService``.

Most production TF Serving clients speak gRPC, and a real tensorflow/serving switches
version policies and labels only through ``ModelService.HandleReloadConfigRequest``; so
chaoskit's server answers the same services, built on the ``tensorflow-serving-api``
package's generated stubs, on a port of its own.  Requests resolve their version, run
and fail exactly as over REST (:mod:`chaoskit.serving.api`); an :class:`ApiError`
becomes the gRPC status of the same canonical code (NOT_FOUND, INVALID_ARGUMENT ...)
with the same message.  The stubs import TensorFlow, so this module is imported once
TensorFlow is (the REST port answers before that).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from chaoskit.model import import_tensorflow

tf = import_tensorflow(threads=None)  # quietly, before the stubs below import it

from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from chaoskit.errors import ConfigError  # noqa: E402
from chaoskit.serving import api, tensors  # noqa: E402
from chaoskit.serving.api import ApiError  # noqa: E402
from chaoskit.serving.config import ServingConfig, parse_config  # noqa: E402
from chaoskit.serving.metrics import RequestMetrics  # noqa: E402
from chaoskit.serving.store import ModelStore, Servable  # noqa: E402

MAX_MESSAGE = 64 * 1024 * 1024  # as the REST side's body limit
SIGNATURE_DEF = "signature_def"


def _spec(spec: Any) -> tuple[str, int | None, str | None]:
    """A ``ModelSpec``'s model name, version number and label (at most one is set)."""
    if not spec.name:
        raise ApiError(400, "Missing model name in request.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.name, int(spec.version.value), None
    if choice == "version_label":
        return spec.name, None, spec.version_label
    return spec.name, None, None


def _answered_spec(into: Any, name: str, found: Servable, signature_name: str) -> None:
    into.name = name
    into.version.value = found.version
    into.signature_name = signature_name


def _input_arrays(protos: Any, specs: dict[str, tensors.InputSpec]) -> dict[str, np.ndarray]:
    """Each ``TensorProto`` as an array, after TF Serving's checks of names, types, shapes."""
    sent, wanted = set(protos), set(specs)
    if sent != wanted:
        raise ApiError(400, f"input size does not match signature: {len(sent)}!={len(wanted)} "
                            f"len({sorted(sent)}) != len({sorted(wanted)}). Sent extra: "
                            f"{sorted(sent - wanted)}. Missing but required: "
                            f"{sorted(wanted - sent)}.")  # fmt: skip
    arrays = {}
    for name, proto in protos.items():
        spec = specs[name]
        try:
            array = tf.make_ndarray(proto)
        except (ValueError, TypeError) as e:
            raise ApiError(400, f"tensor parsing error: {name}: {e}") from None
        kind = np.dtype(object) if array.dtype.kind in "OSU" else array.dtype
        if kind != spec.dtype:
            raise ApiError(400, f"Expects arg '{name}' to be {tensors.tf_type_name(spec.dtype)} "
                                f"but {tensors.tf_type_name(kind)} is provided")  # fmt: skip
        try:
            tensors.check_shape(array, spec)
        except tensors.RequestError as e:
            raise ApiError(400, str(e)) from None
        arrays[name] = array
    return arrays


def _serialized_examples(request: Any) -> list[bytes]:
    """A classify/regress request's examples, each serialized with the context's features."""
    kind = request.input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request.input.example_list.examples]
    if kind == "example_list_with_context":
        listed = request.input.example_list_with_context
        context = listed.context.SerializeToString()
        return [context + e.SerializeToString() for e in listed.examples]
    raise ApiError(400, "Input is empty")


def server_config(store: ModelStore, request: Any) -> ServingConfig:
    """The :class:`ServingConfig` a ``ReloadConfigRequest`` asks for, or the reason this
    server cannot take it (one model, served from its own base path)."""
    config = request.config
    if config.WhichOneof("config") != "model_config_list":
        raise ApiError(400, "ServerModelConfig type not supported by HandleReloadConfigRequest."
                            " Only ModelConfigList is currently supported")  # fmt: skip
    models = list(config.model_config_list.config)
    names = [m.name for m in models]
    if names != [store.model_name]:
        raise ApiError(400, f"this server serves one model, {store.model_name}; the config "
                            f"names {names}")  # fmt: skip
    (model,) = models
    if model.base_path and Path(model.base_path).resolve() != store.base_path.resolve():
        raise ApiError(400, f"model {model.name}: base_path {model.base_path} is not the one "
                            f"served, {store.base_path}")  # fmt: skip
    if model.model_platform not in ("", "tensorflow"):
        raise ApiError(400, f"model {model.name}: model_platform {model.model_platform!r} "
                            "is not tensorflow")  # fmt: skip
    wanted = {key: value for key, value in json_format.MessageToDict(
        model, preserving_proto_field_name=True).items()
        if key in ("model_version_policy", "version_labels")}  # fmt: skip
    try:  # the model config file's parser: one set of rules for both ways in
        return parse_config(json.dumps(wanted), f"model {model.name}")
    except ConfigError as e:
        raise ApiError(400, str(e)) from None


class _Service:
    """What both services share: the store, the metrics, ApiError to gRPC status."""

    def __init__(self, store: ModelStore, metrics: RequestMetrics,
                 report: Callable[[str, dict[str, Any]], None]) -> None:  # fmt: skip
        self.store = store
        self.metrics = metrics
        self.report = report

    @contextmanager
    def _answering(self, context: grpc.ServicerContext, model: str,
                   method: str | None = None) -> Iterator[None]:  # fmt: skip
        """Turn an ApiError into its gRPC status; count an inference *method*."""
        started, code = time.perf_counter(), "OK"
        try:
            yield
        except ApiError as e:
            code = e.code
            context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN), e.message)
        finally:
            if method is not None:
                self.metrics.observe(model, method, code, time.perf_counter() - started,
                                     entrypoint="GRPC")  # fmt: skip


class PredictionService(_Service, prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._answering(context, request.model_spec.name, "predict"):
            name, version, label = _spec(request.model_spec)
            found = api.servable(self.store, name, version, label)
            sig = api.signature(found, request.model_spec.signature_name)
            outputs = api.run(sig, _input_arrays(request.inputs, sig.inputs))
            wanted = list(request.output_filter) or sorted(outputs)
            for alias in wanted:
                if alias not in outputs:
                    raise ApiError(400, f"output tensor alias not found in signature: {alias} "
                                        f"Outputs expected to be in the set "
                                        f"{{{','.join(sorted(outputs))}}}.")  # fmt: skip
            response = predict_pb2.PredictResponse()
            _answered_spec(response.model_spec, name, found, sig.name)
            for alias in wanted:
                response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
            return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._answering(context, request.model_spec.name):
            fields = list(request.metadata_field)
            if not fields:
                raise ApiError(400, "GetModelMetadataRequest must specify at least one "
                                    "metadata_field")  # fmt: skip
            for field in fields:
                if field != SIGNATURE_DEF:
                    raise ApiError(400, f"Metadata field {field} is not supported")
            name, version, label = _spec(request.model_spec)
            found = api.servable(self.store, name, version, label)
            defs = json_format.ParseDict({"signature_def": found.signature_def},
                                         get_model_metadata_pb2.SignatureDefMap())  # fmt: skip
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = found.version
            response.metadata[SIGNATURE_DEF].Pack(defs)
            return response

    def _examples(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        with self._answering(context, request.model_spec.name, method):
            name, version, label = _spec(request.model_spec)
            found = api.servable(self.store, name, version, label)
            sig = api.signature(found, request.model_spec.signature_name)
            results = api.run_examples(method, found, sig, _serialized_examples(request))
            if method == "regress":
                response = regression_pb2.RegressionResponse()
                for value in results["results"]:
                    response.result.regressions.add(value=value)
            else:
                response = classification_pb2.ClassificationResponse()
                for row in results["results"]:
                    classes = response.result.classifications.add()
                    for label_text, score in row:
                        classes.classes.add(label=label_text, score=score)
            _answered_spec(response.model_spec, name, found, sig.name)
            return response

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._examples("classify", request, context)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._examples("regress", request, context)


class ModelService(_Service, model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._answering(context, request.model_spec.name):
            name, version, _ = _spec(request.model_spec)  # a label is not looked at
            states = api.model_status(self.store, name, version)
            return json_format.ParseDict({"model_version_status": states},
                                         get_model_status_pb2.GetModelStatusResponse())  # fmt: skip

    def HandleReloadConfigRequest(self, request: Any,  # noqa: N802
                                  context: grpc.ServicerContext) -> Any:  # fmt: skip
        """Apply a new policy and labels now; the response's status and the call's say
        whether it was taken (a refusal leaves the config in force unchanged)."""
        response = model_management_pb2.ReloadConfigResponse()
        with self._answering(context, self.store.model_name):
            config = server_config(self.store, request)
            refused = self.store.apply_config(config)
            if refused is not None:
                self.report("serving.config_refused", {"error": refused, "via": "grpc"})
                raise ApiError(400, refused, "FAILED_PRECONDITION")
            self.report("serving.config_applied", {**config.as_json(), "via": "grpc"})
        return response


def start(store: ModelStore, metrics: RequestMetrics, host: str, port: int,
          report: Callable[[str, dict[str, Any]], None]) -> tuple[grpc.Server, int]:  # fmt: skip
    """Serve both services on *host:port* (0: a free port); the server and its port.
    ``OSError`` when the port cannot be bound."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE),
               ("grpc.max_send_message_length", MAX_MESSAGE),
               ("grpc.so_reuseport", 0)]  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="grpc"),
                         options=options)  # fmt: skip
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(store, metrics, report), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(store, metrics, report), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio >= 1.60 raises instead of returning 0
        raise OSError(f"cannot listen on {host}:{port} (gRPC): {e}") from None
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} (gRPC)")
    server.start()
    return server, bound
