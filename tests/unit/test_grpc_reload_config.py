"""``HandleReloadConfigRequest`` → the server's config: what one model server can take,
and one clear refusal (TF Serving's message where it has one) for what it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow_serving.apis import model_management_pb2

from chaoskit.serving.api import ApiError
from chaoskit.serving.config import ServingConfig, VersionPolicy
from chaoskit.serving.grpc_api import server_config
from chaoskit.serving.store import ModelStore


def request(*models: tuple[str, str], **settings: object) -> object:
    made = model_management_pb2.ReloadConfigRequest()
    for name, base in models:
        model = made.config.model_config_list.config.add(name=name, base_path=base)
        for key, value in settings.items():
            if key == "labels":
                model.version_labels.update(value)
            elif key == "specific":
                model.model_version_policy.specific.versions.extend(value)
            elif key == "all":
                model.model_version_policy.all.SetInParent()
            elif key == "latest":
                model.model_version_policy.latest.num_versions = value
            else:
                setattr(model, key, value)
    return made


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore("m", tmp_path)


def test_policies_and_labels_are_taken(store, tmp_path):
    base = str(tmp_path)
    assert server_config(store, request(("m", base), specific=[2, 3], labels={"stable": 2})) \
        == ServingConfig(VersionPolicy("specific", versions=frozenset({2, 3})), {"stable": 2})
    assert server_config(store, request(("m", base), all=True)).policy == VersionPolicy("all")
    assert server_config(store, request(("m", base), latest=3)).policy == \
        VersionPolicy("latest", num_versions=3)
    # proto3: no policy, or latest {} (num_versions 0), is TF Serving's default: latest 1
    assert server_config(store, request(("m", base))).policy == VersionPolicy()
    assert server_config(store, request(("m", base), latest=0)).policy == VersionPolicy()
    assert server_config(store, request(("m", ""))).policy == VersionPolicy()  # base implied


@pytest.mark.parametrize(
    ("made", "message"),
    [
        (lambda base: model_management_pb2.ReloadConfigRequest(),
         "Only ModelConfigList is currently supported"),
        (lambda base: request(("m", base), ("n", base)), "serves one model, m; the config names"),
        (lambda base: request(("other", base)), "serves one model, m; the config names ['other']"),
        (lambda base: request(("m", "/elsewhere")), "base_path /elsewhere is not the one served"),
        (lambda base: request(("m", base), model_platform="pytorch"),
         "model_platform 'pytorch' is not tensorflow"),
    ],
)  # fmt: skip
def test_what_one_server_cannot_take_is_refused_by_name(store, tmp_path, made, message):
    with pytest.raises(ApiError) as refused:
        server_config(store, made(str(tmp_path)))
    assert refused.value.code == "INVALID_ARGUMENT" and message in refused.value.message
