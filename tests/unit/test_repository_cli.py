"""The ``chaoskit backup`` command line, run in-process through chaoskit.cli.main."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chaoskit.cli import main
from chaoskit.dr import init_repository
from chaoskit.dr.protect.repository.audit import read_log


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHAOSKIT_PASSWORD", "pw")
    init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(os.urandom(5000))
    (src / "sub" / "b").write_bytes(b"b" * 100)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["backup", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_backup_snapshots_restore_verify(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(env / "repo")
    code, out, _ = run(capsys, "run", "--repo", repo, str(env / "src"), "--tag", "t1")
    assert code == 0 and "snapshot" in out and "2 files" in out
    code, out, _ = run(capsys, "snapshots", "--repo", repo, "--json")
    (snap,) = json.loads(out)
    assert snap["tags"] == ["t1"] and snap["summary"]["files"] == 2
    code, out, _ = run(capsys, "snapshots", "--repo", repo)
    assert snap["short_id"] in out and "1 snapshot(s)" in out
    code, out, err = run(capsys, "restore", "--repo", repo, "latest", "--target", str(env / "out"))
    assert code == 0 and "every SHA-256 verified" in out and err == ""  # no progress off a tty
    assert (env / "out" / "sub" / "b").read_bytes() == b"b" * 100
    code, out, _ = run(
        capsys, "verify", "--repo", repo, str(env / "out"), "--snapshot", snap["short_id"]
    )
    assert code == 0 and "matches" in out
    (env / "out" / "a").write_bytes(b"changed")
    (env / "out" / "sub" / "b").unlink()
    (env / "out" / "extra").write_bytes(b"")
    code, out, err = run(capsys, "verify", "--repo", repo, str(env / "out"))
    assert code == 1
    assert out.splitlines() == ["missing  sub/b", "changed  a (size 7 != 5000)", "extra    extra"]
    code, out, _ = run(capsys, "check", "--repo", repo, "--read-data")
    assert code == 0 and "no errors found" in out


def test_forget_keys_and_errors(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = str(env / "repo")
    for _ in range(3):
        assert run(capsys, "run", "--repo", repo, str(env / "src"))[0] == 0
    code, out, _ = run(capsys, "forget", "--repo", repo, "--keep-last", "1", "--prune")
    assert code == 0 and out.count("\nremoved ") == 2 and "prune:" in out
    (env / "pwfile").write_text("second\n")
    code, out, _ = run(
        capsys, "key", "add", "--repo", repo, "--new-password-file", str(env / "pwfile")
    )
    assert code == 0 and out.startswith("added key")
    monkeypatch.delenv("CHAOSKIT_PASSWORD")
    code, out, _ = run(
        capsys, "key", "list", "--repo", repo, "--password-file", str(env / "pwfile")
    )
    assert code == 0 and len(out.splitlines()) == 2 and out.count("*") == 1
    code, _, err = run(capsys, "snapshots", "--repo", repo)
    assert code == 1 and err.strip() == (
        "chaoskit: error: no password: set $CHAOSKIT_PASSWORD or pass --password-file"
    )
    monkeypatch.setenv("CHAOSKIT_PASSWORD", "wrong")
    code, _, err = run(capsys, "snapshots", "--repo", repo)
    assert code == 1 and "wrong password" in err and "Traceback" not in err
    code, _, err = run(capsys, "snapshots", "--repo", str(env / "src"))
    assert code == 1 and "is not a chaoskit repository" in err
    monkeypatch.setenv("CHAOSKIT_PASSWORD", "pw")
    code, _, err = run(capsys, "restore", "--repo", repo, "nosuch", "--target", str(env / "x"))
    assert code == 1 and "'nosuch' matches 0 snapshots" in err
    code, _, err = run(capsys, "forget", "--repo", repo)
    assert code == 1 and "needs a policy" in err
    code, _, err = run(capsys, "forget", "--repo", repo, "--keep-within", "a week")
    assert code == 1 and "'a week'" in err


def test_progress_line_shows_bytes_files_rate_only_when_enabled() -> None:
    import io

    from chaoskit.dr.protect.repository.progress import Progress

    stream = io.StringIO()
    progress = Progress("backup", 3 << 20, 2, enabled=True, stream=stream)
    progress.add(3 << 20, 2)
    progress.done()
    last = stream.getvalue().split("\r")[-1]
    assert last.startswith("backup: 3.0 MiB / 3.0 MiB, 2 / 2 files, ") and "/s" in last
    quiet = io.StringIO()
    silent = Progress("backup", enabled=False, stream=quiet)
    silent.add(100, 1)
    silent.done()
    assert quiet.getvalue() == ""


def test_roles_on_the_command_line(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """key add --role, key list shows roles, and a refused operation is one line naming
    key, role and operation, exit code 2, nothing written."""
    from chaoskit.dr.protect.backup_cli import ROLES
    from chaoskit.dr.protect.repository.roles import ROLES as REPOSITORY_ROLES

    assert ROLES == REPOSITORY_ROLES
    repo = str(env / "repo")
    assert run(capsys, "run", "--repo", repo, str(env / "src"))[0] == 0
    for role in ("writer", "reader"):
        (env / role).write_text(f"{role} password\n")
        code, out, _ = run(
            capsys, "key", "add", "--repo", repo, "--role", role,
            "--new-password-file", str(env / role),
        )  # fmt: skip
        assert code == 0 and out.startswith("added key") and out.endswith(f"(role {role})\n")
    code, out, _ = run(capsys, "key", "list", "--repo", repo)
    assert code == 0 and sorted(line.split()[1] for line in out.splitlines()) == [
        "admin", "reader", "writer",
    ]  # fmt: skip
    as_writer = ("--repo", repo, "--password-file", str(env / "writer"))
    code, out, _ = run(capsys, "run", *as_writer, str(env / "src"))
    assert code == 0 and "snapshot" in out
    def stored() -> list[Path]:
        return sorted(p for p in (env / "repo").rglob("*") if p.parent.name != "audit")

    files = stored()
    refused = [
        ("snapshots", ["snapshots", *as_writer]),
        ("restore", ["restore", *as_writer, "latest", "--target", str(env / "out")]),
        ("verify", ["verify", *as_writer, str(env / "src")]),
        ("check", ["check", *as_writer]),
        ("forget", ["forget", *as_writer, "--keep-last", "1", "--prune"]),
        ("prune", ["prune", *as_writer]),
        ("key list", ["key", "list", *as_writer]),
        ("key add", ["key", "add", "--role", "admin", *as_writer]),
    ]
    as_reader = ("--repo", repo, "--password-file", str(env / "reader"))
    refused += [
        ("backup", ["run", *as_reader, str(env / "src")]),
        ("forget", ["forget", *as_reader, "--keep-last", "1"]),
        ("prune", ["prune", *as_reader]),
    ]
    for operation, argv in refused:
        code, out, err = run(capsys, *argv)
        role = "writer" if argv[argv.index("--password-file") + 1].endswith("writer") else "reader"
        assert code == 2 and out == "", argv
        (line,) = err.splitlines()
        assert line.startswith("chaoskit: refused: key ") and "Traceback" not in err
        assert f"has role {role}, which may not {operation} " in line, line
        assert stored() == files, argv  # nothing written but the refusal's audit entry
        last = read_log(env / "repo")[-1]
        assert (last["op"], last["outcome"], last["role"]) == (operation, "refused", role)
    assert not (env / "out").exists()
    code, out, _ = run(capsys, "restore", *as_reader, "latest", "--target", str(env / "out"))
    assert code == 0 and (env / "out" / "a").read_bytes() == (env / "src" / "a").read_bytes()
    code, out, _ = run(capsys, "snapshots", "--repo", repo)
    assert code == 0 and "2 snapshot(s)" in out
