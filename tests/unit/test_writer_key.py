"""The DR engine's write-only key: the store guard makes it once, and the replicator on
it ships everything and still reports when the DR site's newest recovery point was made
(from the snapshots' headers)."""

from __future__ import annotations

from pathlib import Path

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.guard_keys import open_backup_repository, open_writer
from chaoskit.dr.protect.replication import Replicator, SiteClient
from chaoskit.dr.protect.site import SiteServer
from chaoskit.proxy.testing import serving

TOKEN = b"t" * 32


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def record(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def test_a_writer_key_replicates_with_creation_times(tmp_path: Path) -> None:
    admin = init_repository(tmp_path / "repo", "admin pw", scrypt_n=2**10)
    admin.add_key("writer pw", role="writer", scrypt_n=2**10)
    writer = open_repository(admin.root, "writer pw")
    src = tmp_path / "src"
    src.mkdir()
    made = []
    for step in (1, 2):
        (src / "w").write_bytes(bytes([step]) * 5000)
        made.append(writer.backup(src, time=100.0 + step, checkpoint_step=step))
    events = Events()
    with serving(SiteServer(tmp_path / "site", TOKEN)) as site:
        client = SiteClient(site.server_address[:2], TOKEN)  # type: ignore[arg-type]
        replicator = Replicator(writer, client, events)
        assert replicator.sync_once() > 0
        assert replicator.pending() == []
    replicated = [f for e, f in events.events if e == "backup.replicated"]
    assert [(f["snapshot"], f["wall_created"], f["step"]) for f in replicated] == [
        (s.id, s.time, s.checkpoint_step) for s in sorted(made, key=lambda s: s.id)
    ]
    assert replicator.newest_created == 102.0
    # what the site holds opens with a reading key, the writer's snapshots included
    shipped = open_repository(tmp_path / "site", "admin pw")
    assert [s.id for s in shipped.snapshots()] == [s.id for s in made]
    assert shipped.check(read_data=True).ok


def test_the_writer_key_is_made_once_with_a_private_password_file(tmp_path: Path) -> None:
    keeper = open_backup_repository(tmp_path / "backups")
    password_file = tmp_path / "backups.writer-password"
    writer = open_writer(keeper, password_file)
    assert writer.role == "writer" and writer.master is None
    assert password_file.stat().st_mode & 0o777 == 0o600
    again = open_writer(open_backup_repository(tmp_path / "backups"), password_file)
    assert again.key_id == writer.key_id
    assert sorted(k.role for k in keeper.list_keys()) == ["admin", "writer"]


def test_key_files_are_private_in_the_repository_and_at_the_dr_site(tmp_path: Path) -> None:
    """harden-check flags a key file others can read: chaoskit never writes one."""
    admin = init_repository(tmp_path / "repo", "admin pw", scrypt_n=2**10)
    admin.add_key("writer pw", role="writer", scrypt_n=2**10)
    with serving(SiteServer(tmp_path / "site", TOKEN)) as site:
        client = SiteClient(site.server_address[:2], TOKEN)  # type: ignore[arg-type]
        Replicator(admin, client, Events()).sync_once()
    for root in (tmp_path / "repo", tmp_path / "site"):
        modes = {p.stat().st_mode & 0o777 for p in (root / "keys").iterdir()}
        assert modes == {0o600}, (root, modes)
