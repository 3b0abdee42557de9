"""The model config file: its JSON form, its refusals, and the watcher that re-reads it."""

from __future__ import annotations

import json

import pytest

from chaoskit.errors import ChaosKitError, ConfigError
from chaoskit.serving.config import (
    ConfigWatcher,
    ServingConfig,
    VersionPolicy,
    model_server_config_text,
    parse_config,
)


def test_defaults_and_the_three_policies():
    assert parse_config("{}") == ServingConfig(VersionPolicy("latest", 1), {})
    assert parse_config('{"model_version_policy": {"latest": {}}}').policy.num_versions == 1
    latest = parse_config('{"model_version_policy": {"latest": {"num_versions": 2}}}')
    assert latest.policy == VersionPolicy("latest", 2)
    assert parse_config('{"model_version_policy": {"all": {}}}').policy.kind == "all"
    config = parse_config(
        json.dumps(
            {
                "model_version_policy": {"specific": {"versions": [3, "4"]}},
                "version_labels": {"stable": 3, "canary": "4", "blue green": 4},
            }
        )
    )
    assert config.policy == VersionPolicy("specific", versions=frozenset({3, 4}))
    assert config.labels == {"stable": 3, "canary": 4, "blue green": 4}
    assert parse_config(json.dumps(config.as_json())) == config


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object, got []"),
        ('{"model_version_policies": {}}', "unknown key 'model_version_policies'"),
        ('{"model_version_policy": {}}', "exactly one of latest, all, specific"),
        ('{"model_version_policy": {"all": {}, "latest": {}}}', "exactly one of"),
        ('{"model_version_policy": {"newest": {}}}', "unknown key 'newest'"),
        ('{"model_version_policy": {"latest": {"num_versions": 0}}}', "got 0"),
        ('{"model_version_policy": {"latest": {"num_versions": true}}}', "got True"),
        ('{"model_version_policy": {"specific": {"versions": []}}}', "non-empty list, got []"),
        ('{"model_version_policy": {"specific": {}}}', "non-empty list, got None"),
        ('{"model_version_policy": {"specific": {"versions": [-1]}}}', "got -1"),
        ('{"model_version_policy": {"specific": {"versions": ["x"]}}}', "got 'x'"),
        ('{"model_version_policy": {"all": {"x": 1}}}', "unknown key 'x'"),
        ('{"version_labels": []}', "version_labels must be a JSON object"),
        ('{"version_labels": {"stable": 1.5}}', "version_labels['stable'] must be"),
        ('{"version_labels": {"": 1}}', "must not be empty"),
    ],
)
def test_bad_configs_name_the_bad_value(text, needle):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.json")
    assert isinstance(info.value, ChaosKitError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("cfg.json: ") and needle in str(info.value)


def test_tf_serving_protobuf_text_has_the_same_settings():
    config = parse_config(
        '{"model_version_policy": {"specific": {"versions": [4, 3]}},'
        ' "version_labels": {"stable": 3, "canary": 4}}'
    )
    text = model_server_config_text("reference", "/models/reference", config)
    assert 'name: "reference"' in text and 'base_path: "/models/reference"' in text
    assert "model_version_policy { specific { versions: 3 versions: 4 } }" in text
    assert 'version_labels { key: "canary" value: 4 }' in text
    assert 'version_labels { key: "stable" value: 3 }' in text
    assert text.count("{") == text.count("}")
    latest = model_server_config_text("m", "/b", ServingConfig())
    assert "model_version_policy { latest { num_versions: 1 } }" in latest


class Recorder:
    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.applied: list[ServingConfig] = []
        self.events: list[tuple[str, dict]] = []

    def apply(self, config: ServingConfig) -> str | None:
        if self.refuse is not None:
            return self.refuse
        self.applied.append(config)
        return None

    def report(self, event: str, fields: dict) -> None:
        self.events.append((event, fields))


def test_watcher_applies_each_new_content_once_and_keeps_the_old_on_errors(tmp_path):
    path = tmp_path / "model.json"
    rec = Recorder()
    watcher = ConfigWatcher(path, rec.apply, rec.report)
    assert watcher.poll_once() is False  # missing file: refused, reported once
    assert watcher.poll_once() is False
    assert [e for e, _ in rec.events] == ["serving.config_refused"]
    assert "cannot read model config" in rec.events[0][1]["error"]

    path.write_text('{"version_labels": {"stable": 1}}')
    assert watcher.poll_once() is True and rec.applied[-1].labels == {"stable": 1}
    assert rec.events[-1][0] == "serving.config_applied"
    assert rec.events[-1][1]["version_labels"] == {"stable": 1}
    assert watcher.poll_once() is False and len(rec.applied) == 1  # unchanged: not re-applied

    path.write_text('{"version_labels": {"stable": "one"}}')
    assert watcher.poll_once() is False and watcher.poll_once() is False
    refused = [f for e, f in rec.events if e == "serving.config_refused"]
    assert len(refused) == 2 and "'one'" in refused[-1]["error"]

    rec.refuse = "Request to assign label to version 2 ..."
    path.write_text('{"version_labels": {"stable": 2}}')
    assert watcher.poll_once() is False and watcher.poll_once() is False
    assert [f["error"] for e, f in rec.events if e == "serving.config_refused"][-1] == rec.refuse
    assert len([e for e, _ in rec.events if e == "serving.config_refused"]) == 3
    rec.refuse = None  # the version has loaded since: the same file now takes effect
    assert watcher.poll_once() is True and rec.applied[-1].labels == {"stable": 2}


def test_watcher_with_poll_wait_zero_stops_once_applied(tmp_path):
    import threading

    path = tmp_path / "model.json"
    path.write_text("{}")
    rec = Recorder()
    stop = threading.Event()
    ConfigWatcher(path, rec.apply, rec.report).run(stop, 0, retry=0.01)  # returns: applied
    assert len(rec.applied) == 1
