"""The server's version policies and labels, with a fake loader standing in for TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaoskit.journal import Journal, read_journal
from chaoskit.serving.config import ServingConfig, VersionPolicy
from chaoskit.serving.store import LoadError, ModelStore, Servable, fingerprint


class FakeLoader:
    """Loads any version dir unless it contains a file named BROKEN."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, version: int, path: Path) -> Servable:
        self.calls.append(version)
        if (path / "BROKEN").exists():
            raise LoadError("DATA_LOSS", "DataLossError", "Checksum does not match", str(path))
        return Servable(version, path, object(), {}, {})


def make(base: Path, version: int, broken: bool = False) -> Path:
    d = base / str(version)
    d.mkdir()
    (d / "saved_model.pb").write_bytes(b"pb")
    if broken:
        (d / "BROKEN").write_bytes(b"")
    return d


@pytest.fixture
def setup(tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    loader = FakeLoader()
    journal = Journal(tmp_path / "journal.jsonl", source="serving")
    store = ModelStore("m", base, journal, loader=loader)
    yield base, loader, store, tmp_path / "journal.jsonl"
    journal.close()


def states(store: ModelStore) -> dict[int, tuple[str, str]]:
    return {int(s["version"]): (s["state"], s["status"]["error_code"]) for s in store.status()}


def served(store: ModelStore) -> int | None:
    current = store.current()
    return None if current is None else current.version


def test_serves_the_newest_and_unloads_the_old(setup):
    base, loader, store, journal = setup
    store.poll_once()
    assert served(store) is None and store.status() == []
    make(base, 1)
    make(base, 2)
    (base / "abc").mkdir()
    store.poll_once()
    assert served(store) == 2 and loader.calls == [2]
    make(base, 3)
    store.poll_once()
    assert served(store) == 3 and states(store) == {3: ("AVAILABLE", "OK"), 2: ("END", "OK")}
    events = [e["event"] for e in read_journal(journal)]
    assert events.count("serving.version_loaded") == 2 and "serving.version_unloaded" in events


def test_a_broken_newest_version_falls_back_and_is_not_retried_until_changed(setup):
    base, loader, store, journal = setup
    make(base, 1)
    store.poll_once()
    bad = make(base, 5, broken=True)
    make(base, 4)
    store.poll_once()
    assert served(store) == 4 and loader.calls == [1, 5, 4]
    assert states(store)[5] == ("END", "DATA_LOSS")
    store.poll_once()
    store.poll_once()
    assert loader.calls == [1, 5, 4]  # unchanged: not retried
    (bad / "BROKEN").unlink()  # repaired (its files changed)
    store.poll_once()
    assert served(store) == 5 and loader.calls == [1, 5, 4, 5]
    failed = [e for e in read_journal(journal) if e["event"] == "serving.load_failed"]
    assert len(failed) == 1 and failed[0]["version"] == 5 and failed[0]["file"] == str(bad)


def test_the_served_version_stays_when_its_directory_vanishes(setup):
    base, loader, store, _ = setup
    make(base, 1)
    two = make(base, 2)
    store.poll_once()
    for f in two.iterdir():
        f.unlink()
    two.rmdir()
    store.poll_once()
    assert served(store) == 2 and states(store)[2] == ("AVAILABLE", "OK")
    assert loader.calls == [2]  # not replaced by the older version 1


def test_failed_versions_are_forgotten_when_deleted(setup):
    base, _, store, _ = setup
    make(base, 1)
    bad = make(base, 9, broken=True)
    store.poll_once()
    assert 9 in states(store)
    for f in bad.iterdir():
        f.unlink()
    bad.rmdir()
    store.poll_once()
    assert 9 not in states(store) and served(store) == 1


def test_unexpected_loader_errors_are_reported_not_raised(tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    make(base, 1)

    def explode(version: int, path: Path) -> Servable:
        raise RuntimeError("boom")

    store = ModelStore("m", base, None, loader=explode)
    store.poll_once()
    assert served(store) is None and states(store) == {1: ("END", "UNKNOWN")}
    assert "boom" in store.status()[0]["status"]["error_message"]


def test_fingerprint_sees_in_place_changes(tmp_path):
    d = make(tmp_path, 1)
    before = fingerprint(d)
    stat = os.stat(d / "saved_model.pb")
    (d / "saved_model.pb").write_bytes(b"pX")  # same size ...
    os.utime(d / "saved_model.pb", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert fingerprint(d) != before  # ... but a new mtime
    assert fingerprint(tmp_path / "gone") == ()


def loaded(store: ModelStore) -> list[int]:
    return store.loaded_versions()


def test_latest_n_serves_the_n_newest_that_load(setup):
    base, loader, store, _ = setup
    store.apply_config(ServingConfig(VersionPolicy("latest", 2)))
    for v in (1, 2, 3):
        make(base, v)
    make(base, 4, broken=True)
    store.poll_once()
    assert loaded(store) == [2, 3] and served(store) == 3 and loader.calls == [4, 3, 2]
    make(base, 5)
    store.poll_once()
    assert loaded(store) == [3, 5] and states(store)[2] == ("END", "OK")


def test_all_and_specific_load_before_they_unload(setup):
    base, loader, store, journal = setup
    for v in (1, 2, 3):
        make(base, v)
    store.poll_once()
    assert loaded(store) == [3]
    assert store.apply_config(ServingConfig(VersionPolicy("all"))) is None
    store.poll_once()
    assert loaded(store) == [1, 2, 3] and loader.calls == [3, 2, 1]
    store.apply_config(ServingConfig(VersionPolicy("specific", versions=frozenset({1, 7, 9}))))
    store.poll_once()
    store.poll_once()
    assert loaded(store) == [1] and served(store) == 1
    assert states(store) == {3: ("END", "OK"), 2: ("END", "OK"), 1: ("AVAILABLE", "OK")}
    events = read_journal(journal)
    # unloads come after the loads of the same poll; 7 and 9 reported once each
    assert [e["version"] for e in events if e["event"] == "serving.version_not_found"] == [7, 9]
    unloaded = [e["version"] for e in events if e["event"] == "serving.version_unloaded"]
    assert sorted(unloaded) == [2, 3]
    # an unloaded version is reloaded when a policy selects it again (no "failed" memory)
    store.apply_config(ServingConfig(VersionPolicy("specific", versions=frozenset({2}))))
    store.poll_once()
    assert loaded(store) == [2] and loader.calls[-1] == 2


def test_specific_with_nothing_loadable_keeps_what_serves(setup):
    base, _, store, _ = setup
    make(base, 1)
    make(base, 2, broken=True)
    store.poll_once()
    store.apply_config(ServingConfig(VersionPolicy("specific", versions=frozenset({2, 8}))))
    store.poll_once()
    assert loaded(store) == [1] and states(store)[2] == ("END", "DATA_LOSS")


def test_labels_name_only_loaded_versions_and_the_old_config_stays(setup):
    base, _, store, _ = setup
    make(base, 1)
    make(base, 2)
    both = ServingConfig(VersionPolicy("specific", versions=frozenset({1, 2})), {"stable": 1})
    error = store.apply_config(both)  # nothing loaded yet
    assert error is not None and "version 1 of model m" in error and "'stable'" in error
    assert store.config == ServingConfig() and store.label_version("stable") is None
    store.apply_config(ServingConfig(both.policy))
    store.poll_once()
    assert store.apply_config(both) is None and store.label_version("stable") == 1
    moved = ServingConfig(both.policy, {"stable": 2, "canary": 3})
    assert "version 3" in (store.apply_config(moved) or "")
    assert store.config is both  # refused as a whole: stable still at 1
    assert store.apply_config(ServingConfig(both.policy, {"stable": 2})) is None
    assert store.label_version("stable") == 2 and store.wake.is_set()
