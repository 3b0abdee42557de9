"""The ransomware fault against a real repository and a real DR site (no TensorFlow):
every attack on the off-site copy is refused, every local file is encrypted, and the
revert puts back only what the DR engine did not replace meanwhile."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaoskit.dr import init_repository
from chaoskit.dr.protect.guard_keys import open_writer
from chaoskit.dr.protect.replication import Replicator, SiteClient
from chaoskit.dr.protect.site import SiteServer
from chaoskit.errors import FaultError
from chaoskit.faults import FaultContext, Ransomware
from chaoskit.faults.ransomware import MARKER
from chaoskit.journal import Journal
from chaoskit.proxy.testing import serving

TOKEN = b"replicator-token"


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """What a primary host holds: models, checkpoints, a repository shipped to a DR site."""
    with serving(SiteServer(tmp_path / "dr-site", TOKEN)) as site:
        stack = SimpleNamespace(
            data_dir=tmp_path, dr_site="dr-site",
            dr_site_endpoint=site.server_address[:2],
            dr_site_token_file=tmp_path / "dr-site.token",
            repository=tmp_path / "backups",
            writer_password_file=tmp_path / "backups.writer-password",
            model_base_path=tmp_path / "models" / "m", checkpoint_dir=tmp_path / "checkpoints",
        )  # fmt: skip
        stack.dr_site_token_file.write_bytes(TOKEN + b"\n")
        for rel in ("models/m/1/saved_model.pb", "models/m/1/variables/v.data",
                    "checkpoints/ckpt-1.index", "checkpoints/checkpoint"):  # fmt: skip
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(os.urandom(3000))
        keeper = init_repository(stack.repository, "admin pw", scrypt_n=2**10)
        writer = open_writer(keeper, stack.writer_password_file)
        writer.backup(stack.model_base_path / "1")
        writer.backup(stack.checkpoint_dir)
        client = SiteClient(stack.dr_site_endpoint, TOKEN)
        Replicator(writer, client, Journal(tmp_path / "replication.jsonl")).sync_once()
        yield stack


def listing(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_every_attack_is_refused_and_every_local_file_encrypted(
    primary: SimpleNamespace, tmp_path: Path
) -> None:
    site_before = listing(tmp_path / "dr-site")
    local_before = {name: listing(getattr(primary, attr)) for name, attr in
                    (("repository", "repository"), ("models", "model_base_path"),
                     ("checkpoints", "checkpoint_dir"))}  # fmt: skip
    ctx = FaultContext(Journal(tmp_path / "journal.jsonl"), seed=1, stack=primary)
    injection = Ransomware().inject(ctx)
    record = injection.changes.record
    assert [a["what"] for a in record["attempts"] if not a["refused"]] == []
    statuses = {a["what"]: a.get("status") for a in record["attempts"]}
    assert statuses["delete a recovery point"] == 403
    assert statuses["overwrite a recovery point"] == 409
    assert statuses["roll back the audit log"] == 409
    assert statuses["delete with a guessed admin token"] == 401
    errors = [a["error"] for a in record["attempts"] if "writer key" in a["what"]]
    assert all("has role writer, which may not" in e for e in errors) and len(errors) == 2
    # the off-site copy is as it was, bar the site's own audit of the refusals
    after = listing(tmp_path / "dr-site")
    assert {k: v for k, v in after.items() if not k.startswith(".witness")} == {
        k: v for k, v in site_before.items() if not k.startswith(".witness")
    }
    for name, attr in (("repository", "repository"), ("models", "model_base_path"),
                       ("checkpoints", "checkpoint_dir")):  # fmt: skip
        now = listing(getattr(primary, attr))
        assert record["encrypted"][name] == len(now) > 0
        assert all(now[k].endswith(MARKER) and now[k] != v for k, v in local_before[name].items()
                   if k in now)  # fmt: skip
    # a file the DR engine restored meanwhile stays; the others are put back
    repaired = primary.model_base_path / "1" / "saved_model.pb"
    repaired.write_bytes(b"restored by the DR engine")
    injection.revert()
    assert repaired.read_bytes() == b"restored by the DR engine"
    back = listing(primary.checkpoint_dir)
    assert back == local_before["checkpoints"]


def test_a_stack_without_dr_site_or_unknown_targets_is_refused(
    primary: SimpleNamespace, tmp_path: Path
) -> None:
    with pytest.raises(FaultError, match="encrypt \\['disks'\\]"):
        Ransomware(encrypt=("disks",))
    primary.dr_site = None
    with pytest.raises(FaultError, match="the stack has no DR site to attack"):
        Ransomware().inject(FaultContext(Journal(tmp_path / "journal.jsonl"), stack=primary))
