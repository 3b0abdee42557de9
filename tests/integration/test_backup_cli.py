"""The real ``chaoskit backup`` console command in subprocesses: exit codes, messages,
progress on a terminal only, and a SIGKILLed backup whose lock is taken over."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHAOSKIT = shutil.which("chaoskit", path=str(Path(sys.executable).parent)) or "chaoskit"


def ck(
    *args: str, env: dict[str, str], check: bool = True, **kw: object
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [CHAOSKIT, "backup", *args], env=env, capture_output=True, text=True, timeout=120, **kw
    )  # type: ignore[call-overload]
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "pw").write_text("s3cret\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOSKIT_")}
    env["CHAOSKIT_REPOSITORY"] = str(tmp_path / "repo")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(os.urandom(3 << 20))
    (src / "sub" / "notes").write_text("v1\n")
    return tmp_path, env


def test_cli_cycle_with_tampering(site: tuple[Path, dict[str, str]]) -> None:
    tmp, env = site
    pw = ["--password-file", str(tmp / "pw")]
    missing = ck("init", env=env, check=False)
    assert missing.returncode == 1 and "no password" in missing.stderr
    ck("init", *pw, env=env)
    out = ck("run", *pw, str(tmp / "src"), "--tag", "ci", env=env).stdout
    assert "2 files" in out
    snaps = json.loads(ck("snapshots", *pw, "--json", env=env).stdout)
    assert len(snaps) == 1 and snaps[0]["tags"] == ["ci"]
    ck("restore", *pw, "latest", "--target", str(tmp / "out"), env=env)
    assert (tmp / "out" / "model.bin").read_bytes() == (tmp / "src" / "model.bin").read_bytes()
    assert ck("verify", *pw, str(tmp / "out"), env=env).returncode == 0
    (tmp / "out" / "sub" / "notes").write_text("v2\n")
    differ = ck("verify", *pw, str(tmp / "out"), "--snapshot", snaps[0]["id"], env=env, check=False)
    assert differ.returncode == 1 and "changed  sub/notes" in differ.stdout
    # damage one pack byte: check --read-data names the pack and the snapshot
    pack = next(p for p in (tmp / "repo" / "data").rglob("*") if p.is_file())
    os.chmod(pack, 0o644)
    data = bytearray(pack.read_bytes())
    data[1000] ^= 0xFF
    pack.write_bytes(bytes(data))
    bad = ck("check", *pw, "--read-data", env=env, check=False)
    assert bad.returncode == 1
    assert f"pack {pack.name}" in bad.stdout and snaps[0]["short_id"] in bad.stdout
    fail = ck("restore", *pw, "latest", "--target", str(tmp / "out"), env=env, check=False)
    assert fail.returncode == 1 and fail.stderr.startswith("chaoskit: error: restore of snapshot")
    assert (tmp / "out" / "sub" / "notes").read_text() == "v2\n"  # target left as it was
    wrong = ck("snapshots", env={**env, "CHAOSKIT_PASSWORD": "nope"}, check=False)
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
    assert "wrong password" in wrong.stderr


def test_progress_only_on_a_terminal(site: tuple[Path, dict[str, str]]) -> None:
    tmp, env = site
    env["CHAOSKIT_PASSWORD"] = "pw"
    ck("init", env=env)
    quiet = ck("run", str(tmp / "src"), env=env)
    assert quiet.stderr == ""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [CHAOSKIT, "backup", "restore", "latest", "--target", str(tmp / "out")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO once the writer side is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    text = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "restore: 3.0 MiB / 3.0 MiB, 2 / 2 files" in text and "/s" in text


def test_sigkilled_backup_lock_is_taken_over(site: tuple[Path, dict[str, str]]) -> None:
    tmp, env = site
    env["CHAOSKIT_PASSWORD"] = "pw"
    ck("init", env=env)
    (tmp / "src" / "big").write_bytes(os.urandom(32 << 20))
    proc = subprocess.Popen(
        [CHAOSKIT, "backup", "run", str(tmp / "src")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    locks = tmp / "repo" / "locks"
    deadline = time.monotonic() + 60
    while not any(p for p in locks.iterdir() if not p.name.startswith(".")):
        assert proc.poll() is None, "backup ended before it was seen holding its lock"
        assert time.monotonic() < deadline, "backup never took its lock"
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=30)
    assert list(locks.iterdir())  # the dead process's lock is still there
    checked = ck("check", "--read-data", env=env)
    assert "removing stale shared lock" in checked.stderr and "is gone" in checked.stderr
    assert "no errors found" in checked.stdout
    assert list(locks.iterdir()) == []
    assert "0 snapshot(s)" in ck("snapshots", env=env).stdout
    ck("prune", env=env)
    ck("run", str(tmp / "src"), env=env)
    assert "no errors found" in ck("check", "--read-data", env=env).stdout


def test_watch_stops_cleanly_on_sigterm(site: tuple[Path, dict[str, str]]) -> None:
    tmp, env = site
    env["CHAOSKIT_PASSWORD"] = "pw"
    ck("init", env=env)
    (tmp / "ckpts").mkdir()
    proc = subprocess.Popen(
        [CHAOSKIT, "backup", "watch", str(tmp / "ckpts"), "--interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("watching ")
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # hung on SIGTERM (the bug chaoskit.signals fixes): no orphan
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert list((tmp / "repo" / "locks").iterdir()) == []


def test_concurrent_backups_share_the_repository(site: tuple[Path, dict[str, str]]) -> None:
    tmp, env = site
    env["CHAOSKIT_PASSWORD"] = "pw"
    ck("init", env=env)
    common = os.urandom(4 << 20)
    sources = []
    for n in range(3):
        src = tmp / f"src{n}"
        src.mkdir()
        (src / "common").write_bytes(common)
        (src / "own").write_bytes(os.urandom(2 << 20))
        sources.append(src)
    procs = [
        subprocess.Popen(
            [CHAOSKIT, "backup", "run", str(src)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in sources
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    snaps = json.loads(ck("snapshots", "--json", env=env).stdout)
    assert sorted(s["source"] for s in snaps) == sorted(str(s) for s in sources)
    assert "no errors found" in ck("check", "--read-data", env=env).stdout
    ck("prune", env=env)  # racing backups may have stored a chunk twice: prune keeps one
    assert "no errors found" in ck("check", "--read-data", env=env).stdout
    for n, snap in enumerate(snaps):
        ck("restore", snap["id"], "--target", str(tmp / f"out{n}"), env=env)
        src = Path(snap["source"])
        assert (tmp / f"out{n}" / "own").read_bytes() == (src / "own").read_bytes()


def test_replicate_to_a_dr_site_and_restore_from_it(site: tuple[Path, dict[str, str]]) -> None:
    from chaoskit.stack.ports import free_port

    tmp, env = site
    pw = ["--password-file", str(tmp / "pw")]
    ck("init", *pw, env=env)
    ck("run", *pw, str(tmp / "src"), env=env)
    (tmp / "token").write_text("site-token\n")
    port = free_port("127.0.0.1")
    server = subprocess.Popen(
        [CHAOSKIT, "backup", "site", "--root", str(tmp / "dr"), "--token-file", str(tmp / "token"),
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "serving" in server.stdout.readline()  # printed once it listens
        to_site = ["--site", f"127.0.0.1:{port}", "--token-file", str(tmp / "token")]
        first = ck("replicate", *pw, *to_site, env=env)
        assert "shipped" in first.stdout
        assert "runs with key" in first.stderr and "of role admin; a writer key is enough" in (
            first.stderr
        )
        assert "shipped 0 files" in ck("replicate", *pw, *to_site, env=env).stdout
        offsite = {**env, "CHAOSKIT_REPOSITORY": str(tmp / "dr")}
        ck("check", *pw, "--read-data", env=offsite)
        ck("restore", *pw, "latest", "--target", str(tmp / "out"), env=offsite)
        assert (tmp / "out" / "model.bin").read_bytes() == (tmp / "src" / "model.bin").read_bytes()
        (tmp / "bad").write_text("wrong\n")
        refused = ck("replicate", *pw, "--site", f"127.0.0.1:{port}", "--token-file",
                     str(tmp / "bad"), env=env, check=False)  # fmt: skip
        assert refused.returncode == 1 and "answered 401" in refused.stderr
        bad_site = ck("replicate", *pw, "--site", "nowhere", "--token-file", str(tmp / "token"),
                      env=env, check=False)  # fmt: skip
        assert (
            bad_site.returncode == 1 and "--site 'nowhere': expected HOST:PORT" in bad_site.stderr
        )
    finally:
        server.terminate()
        assert server.wait(10) == 0
