"""A wheel built from this repository, installed in a fresh venv at the dependency floors.

Proves the floors in pyproject.toml are true: pip is constrained to exactly the lowest
allowed version of every direct dependency (the constraints are derived from pyproject by
code, so they cannot drift from it), and then the installed package, not the editable one
nor the source tree, runs ``chaoskit --help``, ``chaoskit backup init``, one experiment on
the reference stack, and all unit tests.  Cold (empty pip cache) this takes ~3-4 min.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# not part of a build: caches, outputs, the VCS and local venvs
SKIP = shutil.ignore_patterns(".git", ".venv", "reports", "build", "dist", "*.egg-info",
                              "__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache",
                              ".ruff_cache")  # fmt: skip

EXPERIMENT = '''
import pytest

from chaoskit.faults.storage import BitFlip


@pytest.mark.chaos(ttd="2s", rto="15s")
def test_bit_flip_in_the_newest_version(chaos):
    result = chaos.run(BitFlip("model:latest/variables/variables.data-00000-of-00001", flips=3))
    assert result.integrity is True
    assert result.wrong_predictions == 0
'''


def floors(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    """Each direct dependency that applies here, with the version its ``>=`` floor names."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out: dict[str, str] = {}
    for line in deps:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        lows = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lows) == 1, f"dependency {line!r} needs exactly one '>=' floor"
        out[canonicalize_name(req.name)] = lows[0]
    return out


def test_floors_are_exact_releases() -> None:
    """``>=2.16`` would let pip take 2.16.1 while 2.16 does not exist: name a real release."""
    found = floors()
    assert found, "pyproject.toml declares no dependencies"
    for name, version in found.items():
        assert re.fullmatch(r"\d+(\.\d+)+", version), f"{name}: floor {version!r}"


def run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-12000:]}\n--- stderr\n{done.stderr[-4000:]}")
    return done


def test_wheel_installs_at_the_floors_and_runs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    wheels = tmp_path / "wheels"
    hidden = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")  # point at the repo
    base_env = {k: v for k, v in os.environ.items() if k not in hidden}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, src],
        tmp_path, base_env, 600)  # fmt: skip
    (wheel,) = wheels.glob("chaoskit-*.whl")
    # the copy keeps tests/ and examples/ for the unit tests, but no importable source
    shutil.rmtree(src / "chaoskit")

    wanted = floors()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(wanted.items())))
    venv = tmp_path / "venv"
    python3_11 = shutil.which("python3.11") or sys.executable
    run([python3_11, "-m", "venv", venv], tmp_path, base_env, 120)
    bin_ = venv / "bin"
    env = {**base_env, "PATH": f"{bin_}{os.pathsep}{base_env.get('PATH', '')}",
           "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    run([bin_ / "python", "-m", "pip", "install", "-q", "-c", constraints, wheel],
        tmp_path, env, 1500)  # fmt: skip

    listed = run([bin_ / "python", "-m", "pip", "list", "--format=json"], tmp_path, env, 120)
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    assert {n: installed.get(n) for n in wanted} == wanted

    work = tmp_path / "work"  # outside the repository: only the venv's chaoskit is importable
    work.mkdir()
    where = run([bin_ / "python", "-c", "import chaoskit; print(chaoskit.__file__)"],
                work, env, 120).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), f"chaoskit imported from {where}"

    run([bin_ / "chaoskit", "--help"], work, env, 120)
    repo = tmp_path / "backups"
    run([bin_ / "chaoskit", "backup", "init", "--repo", repo],
        work, {**env, "CHAOSKIT_PASSWORD": "floors-only"}, 120)  # fmt: skip
    run([bin_ / "chaoskit", "backup", "snapshots", "--repo", repo],
        work, {**env, "CHAOSKIT_PASSWORD": "floors-only"}, 120)  # fmt: skip

    (work / "test_experiment.py").write_text(EXPERIMENT)
    reports = tmp_path / "reports"
    run([bin_ / "python", "-m", "pytest", "test_experiment.py", "-q", "-p", "no:cacheprovider",
         f"--chaos-report-dir={reports}"], work, env, 900)  # fmt: skip
    rows = json.loads((reports / "latest" / "results.json").read_text())
    assert [(r["fault"], r["verdict"]) for r in rows] == [("bit-flip", "pass")], rows

    # warnings at old floors are expected noise; a failure's short traceback is what matters
    unit = run([bin_ / "python", "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider",
                "-W", "ignore", "--tb=short", "-rfE"], src, env, 1500)  # fmt: skip
    tail = unit.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", tail) and not re.search(r"failed|error", tail), tail
