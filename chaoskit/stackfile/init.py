"""``chaoskit init``: write a stack file and a first experiment for a user's SavedModel.

It reads the model's signature (TensorFlow's own protobuf parser, so this one command
imports TensorFlow), writes a canary request made from the signature's inputs that the
user can edit, a commented ``chaoskit.toml`` that runs as it is (chaoskit's own model
server over the user's model), and ``experiments/test_my_stack.py``.  It never
overwrites: a file that exists is an error naming it, and nothing is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from chaoskit.atomic import atomic_write_text
from chaoskit.canary import auto_canary, signature_inputs
from chaoskit.errors import ConfigError
from chaoskit.model import version_dirs

EXPERIMENT = '''"""My stack under chaos: kill and hang serving, damage the newest version."""

import pytest

from chaoskit.faults import BitFlip, HangService, KillService


@pytest.mark.chaos(ttd="1s", rto="30s")
def test_kill_serving(chaos):
    chaos.run(KillService(chaos.stack.replicas[0]))


@pytest.mark.chaos(ttd="2s", rto="30s")
def test_hang_serving(chaos):
    chaos.run(HangService(chaos.stack.replicas[0]))


@pytest.mark.chaos(ttd="2s", rto="15s")
def test_newest_version_damage(chaos):
    result = chaos.run(BitFlip("model:latest/variables/variables.data-00000-of-00001"))
    assert result.integrity and result.wrong_predictions == 0
'''


def register(subparsers: Any) -> None:
    init = subparsers.add_parser(
        "init", help="write chaoskit.toml and a first experiment for your SavedModel",
        description="Inspect a SavedModel base path (TF Serving layout: BASE/<version>/) "
        "and write chaoskit.toml, canary.json and experiments/test_my_stack.py into "
        "--dir; refuses to overwrite.",
    )  # fmt: skip
    init.add_argument("base_path", help="the model's base path (holds <int version>/ dirs)")
    init.add_argument("--name", help="model name (default: the base path's name)")
    init.add_argument("--signature", default="serving_default")
    init.add_argument("--dir", default=".", help="where to write (default: .)")
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    written = init_project(Path(args.base_path), Path(args.dir), name=args.name,
                           signature=args.signature)  # fmt: skip
    for path in written:
        print(f"wrote {path}")
    print("next: chaoskit run --stack " + str(written[0]))
    return 0


def init_project(base_path: Path, where: Path, *, name: str | None = None,
                 signature: str = "serving_default") -> list[Path]:  # fmt: skip
    """Write the three files; ConfigError (nothing written) when one exists or the model
    cannot be read."""
    base = base_path.absolute()
    targets = [where / "chaoskit.toml", where / "canary.json",
               where / "experiments" / "test_my_stack.py"]  # fmt: skip
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} exists; chaoskit init never overwrites (move it away)")
    versions = version_dirs(base)
    if not versions:
        raise ConfigError(f"{str(base_path)!r} holds no SavedModel version (<int>/ directory)")
    from chaoskit.model import import_tensorflow
    from chaoskit.serving.store import signature_def_json

    import_tensorflow()  # quietly: TF's start-up chatter is no news to the user

    newest = versions[max(versions)]
    try:
        defs = signature_def_json(newest)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the signature of {newest}: {e}") from e
    inputs = signature_inputs({"metadata": {"signature_def": {"signature_def": defs}}}, signature)
    model = name or base.name
    described = ", ".join(f"{n} {s['dtype']} {s['shape']}" for n, s in sorted(inputs.items()))
    atomic_write_text(targets[1], json.dumps({"instances": auto_canary(inputs)}, indent=1))
    atomic_write_text(targets[0], _stack_file(model, base, signature, described))
    targets[2].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(targets[2], EXPERIMENT)
    return targets


def _stack_file(model: str, base: Path, signature: str, inputs: str) -> str:
    return f'''# chaoskit stack file, written by `chaoskit init`; edit it to describe your stack.
# Run:  chaoskit run --stack chaoskit.toml      (the standard suite)
#       pytest experiments --chaos-stack chaoskit.toml

[model]
name = "{model}"
base_path = "{base}"   # TF Serving's layout: <base_path>/<version>/
signature = "{signature}"         # inputs: {inputs}
canary = "canary.json"            # a TF Serving REST request (edit it), or "auto"
tolerance = 1e-5

# Your trainer, if chaoskit should run it (and restart it after a crash):
# [services.trainer]
# role = "trainer"
# command = ["{{python}}", "train.py", "--models", "{{model_base_path}}"]
# readiness = {{ version_exported = true }}
#
# and its checkpoints (format: tf | keras | files):
# [checkpoints]
# dir = "checkpoints"
# format = "keras"

[services.serving]
role = "serving"
replicas = 2                      # behind chaoskit's gateway; failover needs 2
command = ["{{python}}", "-m", "chaoskit.serving", "--model-name", "{{model_name}}",
           "--model-base-path", "{{model_base_path}}", "--rest-port", "{{port_rest}}",
           "--host", "{{bind_host}}"]
ports = {{ rest = 0 }}
readiness = {{ model_status = true }}

[dr]
recovery = "chaoskit"             # or "observe": chaoskit only detects, your platform recovers

[budgets]
ttd = "2s"
rto = "30s"
'''
