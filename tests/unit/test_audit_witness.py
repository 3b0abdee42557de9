"""The DR site witnesses the audit log: a primary that truncates, rolls back or rewrites
its log is caught by comparison.  Real repository, real DR site over HTTP, real
replicator."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.cli import main
from chaoskit.dr import init_repository
from chaoskit.dr.protect.replication import Replicator, SiteClient
from chaoskit.dr.protect.repository.audit import AUDIT_DIR, entry_name, read_log
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.site import SiteServer
from chaoskit.dr.protect.witness import compare_with_witness, load_checkpoint
from chaoskit.proxy.testing import serving

TOKEN = b"witness-token"


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def record(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteServer]:
    with serving(SiteServer(tmp_path / "site", TOKEN)) as server:
        yield server


@pytest.fixture
def repo(tmp_path: Path, site: SiteServer) -> Repository:
    """A repository with 5 audit entries, all shipped to the DR site."""
    repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / "w").write_bytes(bytes([i]) * 3000)
        repo.backup(src)
    repo.check()
    repo.add_key("w", role="writer", scrypt_n=2**10)
    client = SiteClient(site.server_address[:2], TOKEN)  # type: ignore[arg-type]
    Replicator(repo, client, Journal()).sync_once()
    return repo


def audit_files(repo: Repository) -> list[Path]:
    return sorted((repo.root / AUDIT_DIR).glob("*.json"))


def test_the_site_witnesses_every_shipped_entry(repo: Repository, site: SiteServer) -> None:
    checkpoint = load_checkpoint(site.root)
    assert checkpoint["length"] == len(read_log(repo.root)) == 5
    assert checkpoint["problem"] is None
    assert compare_with_witness(repo.root, checkpoint) is None
    over_http = SiteClient(site.server_address[:2], TOKEN).witness()  # type: ignore[arg-type]
    assert over_http == checkpoint


def test_a_truncated_log_is_caught(repo: Repository, site: SiteServer) -> None:
    for path in audit_files(repo)[3:]:
        path.unlink()  # the chain of 0..2 is still intact on its own
    problem = compare_with_witness(repo.root, load_checkpoint(site.root))
    assert problem == ("the DR site witnessed 5 entries, the local log has only 3: it was "
                       "truncated or rolled back")  # fmt: skip


def test_a_rolled_back_log_is_caught(repo: Repository, site: SiteServer, tmp_path: Path) -> None:
    """The attacker keeps a copy of the log, lets it grow, then puts the old copy back
    and appends entries of its own making (with a real key it holds)."""
    saved = tmp_path / "saved-audit"
    shutil.copytree(repo.root / AUDIT_DIR, saved)
    repo.check()
    Replicator(repo, SiteClient(site.server_address[:2], TOKEN), Journal()).sync_once()  # type: ignore[arg-type]
    shutil.rmtree(repo.root / AUDIT_DIR)
    shutil.copytree(saved, repo.root / AUDIT_DIR)
    repo.audit_log._head = None
    repo.audit("backup", "ok", snapshot="forged")  # a valid entry 5, but not the one witnessed
    problem = compare_with_witness(repo.root, load_checkpoint(site.root))
    assert problem is not None and "differs from the one the DR site witnessed" in problem


def test_a_rewritten_entry_cannot_replace_the_witnessed_one(
    repo: Repository, site: SiteServer
) -> None:
    path = repo.root / AUDIT_DIR / entry_name(1)
    entry = json.loads(path.read_bytes())
    entry["outcome"] = "failed"
    path.write_text(json.dumps(entry))
    client = SiteClient(site.server_address[:2], TOKEN)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="409"):
        client.put(f"{AUDIT_DIR}/{entry_name(1)}", path.read_bytes())
    assert json.loads((site.root / AUDIT_DIR / entry_name(1)).read_bytes())["outcome"] == "ok"
    assert "audit entry 1" in str(compare_with_witness(repo.root, load_checkpoint(site.root)))


def test_only_the_next_valid_entry_is_stored(repo: Repository, site: SiteServer) -> None:
    """Drill, repeated runs: an entry the attacker encrypted before the replicator
    shipped it took the next place at the DR site, and every later entry (the recovered
    primary's) was refused as a rewrite.  The site now stores an audit entry only when
    it is the next valid one of the chain it has seen (422 otherwise, audited)."""
    client = SiteClient(site.server_address[:2], TOKEN)  # type: ignore[arg-type]
    nxt = f"{AUDIT_DIR}/{entry_name(5)}"
    with pytest.raises(Exception, match="422"):
        client.put(nxt, b"\x1f9K`CHAOSKIT-RANSOMWARE")
    repo.check()  # the primary's genuine entry 5, then 6
    repo.check()
    genuine = [(repo.root / AUDIT_DIR / entry_name(n)).read_bytes() for n in (5, 6)]
    with pytest.raises(Exception, match="422"):  # 6 before 5: out of order
        client.put(f"{AUDIT_DIR}/{entry_name(6)}", genuine[1])
    with pytest.raises(Exception, match="422"):  # 5's bytes under 6's name
        client.put(f"{AUDIT_DIR}/{entry_name(6)}", genuine[0])
    client.put(nxt, genuine[0])
    client.put(f"{AUDIT_DIR}/{entry_name(6)}", genuine[1])
    assert load_checkpoint(site.root)["length"] == 7
    refused = [e["details"] for e in read_log(site.root / ".witness") if e["outcome"] == "refused"]
    assert [(d["status"], d["path"]) for d in refused] == [
        (422, f"/files/{nxt}"), (422, f"/files/{AUDIT_DIR}/{entry_name(6)}"),
        (422, f"/files/{AUDIT_DIR}/{entry_name(6)}"),
    ]  # fmt: skip


def test_a_forged_checkpoint_is_refused(repo: Repository, site: SiteServer) -> None:
    checkpoint = load_checkpoint(site.root)
    checkpoint["length"] = 2
    assert "not signed by the site's key" in str(compare_with_witness(repo.root, checkpoint))
    genuine = load_checkpoint(site.root)
    assert "pin mismatch" in str(compare_with_witness(repo.root, genuine, pinned="AAAA"))


def test_audit_verify_with_the_site(
    repo: Repository, site: SiteServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN)
    address = "{}:{}".format(*site.server_address[:2])
    for where in (["--site", str(site.root)],
                  ["--site", address, "--token-file", str(token_file)]):  # fmt: skip
        assert main(["audit", "verify", "--repo", str(repo.root), *where]) == 0
        assert "the DR site witnessed the first 5" in capsys.readouterr().out
    audit_files(repo)[-1].unlink()
    assert main(["audit", "verify", "--repo", str(repo.root), "--site", str(site.root)]) == 1
    err = capsys.readouterr().err
    assert "truncated or rolled back" in err and "Traceback" not in err
    assert main(["audit", "verify", "--repo", str(repo.root), "--site", address]) == 1
    assert "needs --token-file" in capsys.readouterr().err


def test_the_site_audits_every_refused_request(
    repo: Repository, site: SiteServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import http.client

    def ask(method: str, path: str, token: bytes | None) -> int:
        conn = http.client.HTTPConnection(*site.server_address[:2], timeout=5)
        headers = {} if token is None else {"Authorization": f"Bearer {token.decode()}"}
        conn.request(method, path, body=b"x" if method == "PUT" else None, headers=headers)
        status = conn.getresponse().status
        conn.close()
        return status

    assert ask("GET", "/files", None) == 401
    assert ask("GET", "/files", b"guessed") == 401
    assert ask("PUT", "/files/../../etc/passwd", TOKEN) == 404
    assert ask("GET", "/files", TOKEN) == 200  # allowed: not in the refusals' log
    refusals = read_log(site.root / ".witness")
    assert [(e["details"]["status"], e["details"]["path"]) for e in refusals] == [
        (401, "/files"), (401, "/files"), (404, "/files/../../etc/passwd"),
    ]  # fmt: skip
    assert refusals[1]["details"]["reason"] == "wrong bearer token"
    assert main(["audit", "show", "--site", str(site.root), "--outcome", "refused"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 entries"
    assert main(["audit", "verify", "--repo", str(repo.root), "--site", str(site.root)]) == 0
    out = capsys.readouterr().out
    assert "3 refused requests, chain and signatures intact" in out
    named = [line.split() for line in out.splitlines() if line.startswith("  refused")]
    assert [(w[3], w[4], w[5]) for w in named] == [
        ("GET", "/files", "401:"), ("GET", "/files", "401:"),
        ("PUT", "/files/../../etc/passwd", "404:"),
    ]  # fmt: skip
