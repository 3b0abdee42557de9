"""The audit log: every operation leaves a signed, chained entry; tampering is named."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chaoskit.cli import main
from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.repository.audit import (
    AUDIT_DIR,
    _canonical,
    entry_hash,
    entry_name,
    public_text,
    read_log,
    verify_log,
)
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.errors import PermissionDeniedError

N = 2**10


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    repo = init_repository(tmp_path / "repo", "admin-pw", scrypt_n=N)
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights").write_bytes(b"w" * 5000)
    repo.backup(src)
    repo.add_key("writer-pw", role="writer", scrypt_n=N)
    writer = open_repository(repo.root, "writer-pw")
    writer.backup(src)
    with pytest.raises(PermissionDeniedError):
        writer.restore("latest", tmp_path / "out")
    repo.restore("latest", tmp_path / "restored")
    repo.check(read_data=True)
    return repo


def entry_path(repo: Repository, seq: int) -> Path:
    return repo.root / AUDIT_DIR / entry_name(seq)


def rewrite(repo: Repository, seq: int, change, *, sign_with: Ed25519PrivateKey | None = None):
    """Change entry *seq* in place (as an attacker with the files would)."""
    path = entry_path(repo, seq)
    entry = json.loads(path.read_bytes())
    change(entry)
    if sign_with is not None:
        entry["signer"] = public_text(sign_with)
        body = {k: v for k, v in entry.items() if k != "sig"}
        entry["sig"] = base64.b64encode(sign_with.sign(_canonical(body))).decode()
    path.write_text(json.dumps(entry))
    return entry


def test_every_operation_is_an_entry_with_its_key_role_and_outcome(repo: Repository) -> None:
    log = read_log(repo.root)
    got = [(e["op"], e["role"], e["outcome"]) for e in log]
    assert got == [
        ("init", "admin", "ok"), ("backup", "admin", "ok"), ("key add", "admin", "ok"),
        ("backup", "writer", "ok"), ("restore", "writer", "refused"),
        ("restore", "admin", "ok"), ("check", "admin", "ok"),
    ]  # fmt: skip
    assert log[4]["details"]["reason"].startswith(f"key {log[4]['key'][:8]} has role writer")
    assert log[2]["details"]["new_key"] == log[3]["key"]  # the writer entered the log here
    verdict = verify_log(repo.root)
    assert verdict.ok and verdict.entries == 7 and verdict.head == entry_hash(log[-1])


def test_a_changed_entry_is_named_by_its_broken_signature(repo: Repository) -> None:
    rewrite(repo, 4, lambda e: e.update(outcome="ok"))  # hide the refusal
    verdict = verify_log(repo.root)
    assert not verdict.ok and verdict.bad_seq == 4
    assert "signature does not verify" in str(verdict.problem)


def test_a_re_signed_entry_is_named_by_its_unknown_signer(repo: Repository) -> None:
    attacker = Ed25519PrivateKey.generate()
    rewrite(repo, 4, lambda e: e.update(outcome="ok"), sign_with=attacker)
    verdict = verify_log(repo.root)
    assert not verdict.ok and verdict.bad_seq == 4
    assert "which no earlier entry introduced" in str(verdict.problem)


def test_a_forged_chain_after_a_rewrite_still_breaks_at_the_rewrite(repo: Repository) -> None:
    """Re-chaining and re-signing every later entry does not help: the forger's key is
    not one the log introduced."""
    attacker = Ed25519PrivateKey.generate()
    prev = rewrite(repo, 2, lambda e: e["details"].update(role="reader"), sign_with=attacker)
    for seq in range(3, 7):
        chained_to = entry_hash(prev)
        prev = rewrite(repo, seq, lambda e, p=chained_to: e.update(prev=p), sign_with=attacker)
    verdict = verify_log(repo.root)
    assert verdict.bad_seq == 2 and "no earlier entry introduced" in str(verdict.problem)


def test_a_missing_entry_is_named(repo: Repository) -> None:
    entry_path(repo, 3).unlink()
    verdict = verify_log(repo.root)
    assert not verdict.ok and verdict.bad_seq == 4 and "expected entry 3" in str(verdict.problem)


def test_entries_of_a_removed_key_are_refused_after_its_removal(repo: Repository) -> None:
    writer_id = read_log(repo.root)[3]["key"]
    writer = open_repository(repo.root, "writer-pw")
    repo.remove_key(writer_id)
    assert verify_log(repo.root).ok
    writer.audit("backup", "ok")  # a removed key's holder still signs as that key
    verdict = verify_log(repo.root)
    assert not verdict.ok and "which no earlier entry introduced" in str(verdict.problem)


def test_a_password_change_hands_signing_to_the_new_key(repo: Repository) -> None:
    old = repo.key_id
    new = repo.change_password("new-pw", scrypt_n=N)
    repo.check()
    log = read_log(repo.root)
    passwd = log[-2]
    assert (passwd["op"], passwd["key"], passwd["details"]["new_key"]) == ("key passwd", old, new)
    assert log[-1]["key"] == new
    assert verify_log(repo.root).ok


def test_concurrent_writers_never_fork_the_chain(repo: Repository) -> None:
    others = [open_repository(repo.root, "admin-pw") for _ in range(3)]
    threads = [
        threading.Thread(target=lambda r=r: [r.audit("check", "ok", n=i) for i in range(30)])
        for r in [repo, *others]
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    verdict = verify_log(repo.root)
    assert verdict.ok and verdict.entries == 7 + 4 * 30


def test_audit_cli_verify_and_show(repo: Repository, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--repo", str(repo.root)]) == 0
    assert "7 entries, chain and signatures intact" in capsys.readouterr().out
    assert main(["audit", "show", "--repo", str(repo.root), "--outcome", "refused"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "restore" in out[0] and "writer" in out[0] and out[1] == "1 entries"
    assert main(["audit", "show", "--repo", str(repo.root), "--op", "backup", "--json"]) == 0
    assert [e["role"] for e in json.loads(capsys.readouterr().out)] == ["admin", "writer"]
    rewrite(repo, 1, lambda e: e["details"].update(snapshot="0" * 32))
    assert main(["audit", "verify", "--repo", str(repo.root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("audit log of") and "audit entry 1:" in err and "Traceback" not in err


def test_audit_cli_names_a_directory_that_is_no_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--repo", str(tmp_path)]) == 1
    assert f"{tmp_path} is not a chaoskit repository" in capsys.readouterr().err
