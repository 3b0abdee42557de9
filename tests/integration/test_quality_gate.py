"""The quality gate against chaoskit's model server: real versions, scored over REST on
the reference model's held-out set; a worse and a diverged version are refused, a
version that does not answer is inconclusive, never a pass; and ``chaoskit quality``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_serving import Server, servers, start  # noqa: F401 - the fixture, used below

from chaoskit import model as ref
from chaoskit.dr.online.quality import (
    BREACH,
    INCONCLUSIVE,
    PROMOTE,
    REGRESSION,
    QualityGate,
    answers,
    reference_labelled_set,
)
from chaoskit.waiting import wait_until

pytestmark = pytest.mark.integration


def trained(steps: int) -> object:
    """The reference model after *steps* steps of the trainer's own data and optimizer."""
    tf = ref.import_tensorflow()
    import keras

    model = ref.build_model(seed=0)
    optimizer = keras.optimizers.Adam(0.01)
    teacher = tf.constant(ref.teacher_weights(0), dtype=tf.float32)

    @tf.function
    def step(i: object) -> None:
        x, y = ref.synthetic_batch(i, 0, teacher)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    for i in range(steps):
        step(tf.constant(i, dtype=tf.int64))
    return model


def diverged() -> object:
    """A model whose weights blew up to NaN, as a run with a learning rate blow-up ends."""
    model = ref.build_model(seed=0)
    model.get_layer("head").kernel.assign(np.full((ref.HIDDEN_DIM, ref.OUTPUT_DIM), np.nan))
    return model


def test_a_worse_and_a_diverged_version_are_refused(servers, tmp_path: Path):  # noqa: F811
    base = tmp_path / "models"
    versions = {1: trained(400), 2: ref.build_model(seed=7), 3: diverged(), 4: trained(600)}
    for version, model in versions.items():
        ref.export_saved_model(ref.serving_module(model), base, version, step=version)
    config = tmp_path / "model-config.json"
    config.write_text(json.dumps({"model_version_policy": {"all": {}}}))
    server = start(servers, tmp_path, base, "--model-config-file", str(config))
    client = server.client()
    wait_until(lambda: client.available_versions() == [1, 2, 3, 4], 60, what="all four loaded")
    labelled = reference_labelled_set(1000)
    gate = QualityGate(REGRESSION, margin=0.25, min_samples=1000)

    good = answers(client, labelled, version=1)
    assert good.error is None and good.outputs.shape == (1000, ref.OUTPUT_DIM)
    first = gate.judge(1, good.outputs, labelled)
    assert first.decision == PROMOTE and first.score < 0.5, first

    untrained = answers(client, labelled, version=2, batch=300)  # a last, shorter batch
    worse = gate.judge(2, untrained.outputs, labelled, good.outputs)
    assert worse.decision == BREACH and worse.score > 2 * first.score, worse
    assert worse.psi > 0.1 and worse.ks > 0.1, worse

    nan = gate.judge(3, answers(client, labelled, version=3).outputs, labelled, good.outputs)
    assert nan.decision == BREACH
    assert nan.reason == "1000 of 1000 outputs are not finite (NaN or inf)"

    better = gate.judge(4, answers(client, labelled, version=4).outputs, labelled, good.outputs)
    assert better.decision == PROMOTE and better.best == first.score, better
    assert gate.best() == min(first.score, better.score)

    missing = answers(client, labelled, version=9)
    assert missing.outputs.shape[0] == 0 and missing.error.startswith("HTTP 404"), missing.error
    assert gate.judge(9, missing.outputs, labelled).decision == INCONCLUSIVE


def quality_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaoskit.cli", "quality", *map(str, args)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_quality_command_judges_a_servers_versions(servers, tmp_path: Path):  # noqa: F811
    base = tmp_path / "models"
    for version, model in {1: trained(400), 2: ref.build_model(seed=7)}.items():
        ref.export_saved_model(ref.serving_module(model), base, version, step=version)
    config = tmp_path / "model-config.json"
    config.write_text(json.dumps({"model_version_policy": {"all": {}}}))
    server = start(servers, tmp_path, base, "--model-config-file", str(config))
    wait_until(lambda: server.client().available_versions() == [1, 2], 60, what="both loaded")
    address = f"127.0.0.1:{server.port}"
    common = ("--server", address, "--model", "reference", "--labelled", "reference")

    both = quality_cli(*common)
    assert both.returncode == 1, both.stderr
    lines = both.stdout.splitlines()
    assert lines[0] == "1000 labelled examples (reference held-out set (seed 0, 1000)), regression"
    assert lines[2].split()[:2] == ["1", "promote"] and lines[3].split()[:2] == ["2", "breach"]
    good = quality_cli(*common, "--versions", "1", "--json")
    assert good.returncode == 0, good.stderr
    (verdict,) = json.loads(good.stdout)
    assert verdict["decision"] == "promote" and verdict["samples"] == 1000
    assert verdict["error"] is None
    short = quality_cli(*common, "--versions", "1,9", "--min-samples", "10")
    assert short.returncode == 2 and short.stdout == ""
    assert short.stderr.strip().endswith("Servable not found for request: Specific(reference, 9)")

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"instances": [[1.0, 2.0, 3.0]] * 4, "targets": [[0.0] * 4] * 4}))
    shapes = quality_cli("--server", address, "--model", "reference", "--labelled", wrong)
    assert shapes.returncode == 2 and len(shapes.stderr.strip().splitlines()) == 1
    assert "instance 0 of input 'x' has shape [3]; the signature expects [8]" in shapes.stderr
    for bad, needle in [(("--server", "nohost"), "--server must be HOST:PORT, got 'nohost'"),
                        (("--versions", "1,x"), "--versions must be version numbers")]:  # fmt: skip
        args = {**dict(zip(common[::2], common[1::2], strict=True)), **dict([bad])}
        out = quality_cli(*[x for kv in args.items() for x in kv])
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr
