"""A user's own trainer, nothing chaoskit-specific in it: a Keras model with two named
inputs of different dtypes and shapes and a three-class output, trained forever on
synthetic data, checkpointed with Keras' ModelCheckpoint (``.weights.h5`` files) and
exported with ``model.export()`` into TF Serving's layout.

    python train.py --models models/custom --checkpoints checkpoints

It resumes from its newest checkpoint file, keeps the newest 5 checkpoints and 5
versions, and exports a version every ``--export-every`` epochs (atomically: into a
hidden directory, then renamed, so a polling server never sees half a version).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

KEEP = 5
CHECKPOINT = "ckpt-{epoch:05d}.weights.h5"
_EPOCH = re.compile(r"ckpt-(\d+)\.weights\.h5$")


def build_model() -> keras.Model:
    features = keras.Input((6,), dtype="float32", name="features")
    category = keras.Input((1,), dtype="int32", name="category")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(4, 3)(category))
    hidden = keras.layers.Dense(16, activation="relu")(
        keras.layers.Concatenate()([features, embedded])
    )
    probabilities = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    model = keras.Model({"features": features, "category": category}, probabilities)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


def data(epoch: int, n: int = 256) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(epoch)
    features = rng.normal(size=(n, 6)).astype("float32")
    category = rng.integers(0, 4, size=(n, 1)).astype("int32")
    labels = ((features[:, 0] + category[:, 0] * 0.5) > 0.7).astype("int32") + (
        features[:, 1] > 1.0
    ).astype("int32")
    return {"features": features, "category": category}, labels


def newest(checkpoints: Path) -> tuple[int, Path] | None:
    found = [(int(m.group(1)), p) for p in checkpoints.glob("ckpt-*.weights.h5")
             if (m := _EPOCH.search(p.name))]  # fmt: skip
    return max(found) if found else None


class Housekeeping(keras.callbacks.Callback):
    """Export every N epochs, rotate checkpoints and versions, pace the epochs."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1  # ModelCheckpoint names files by the 1-based epoch
        if done % self.args.export_every == 0:
            export(self.model, self.args.models, done)
        for path in sorted(self.args.checkpoints.glob("ckpt-*.weights.h5"))[:-KEEP]:
            path.unlink(missing_ok=True)
        time.sleep(self.args.epoch_delay)


def export(model: keras.Model, models: Path, version: int) -> None:
    final = models / str(version)
    if final.exists():
        return
    tmp = models / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.export(str(tmp), verbose=False)
    os.rename(tmp, final)
    versions = sorted((int(p.name), p) for p in models.iterdir() if p.name.isdigit())
    for _, old in versions[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    print(f"exported version {version}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--export-every", type=int, default=20)
    parser.add_argument("--epoch-delay", type=float, default=0.1)
    args = parser.parse_args()
    args.models.mkdir(parents=True, exist_ok=True)
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    model = build_model()
    start = 0
    latest = newest(args.checkpoints)
    if latest is not None:
        start, path = latest
        model.load_weights(path)
        print(f"resumed from {path.name} at epoch {start}", flush=True)
    if not any(p.name.isdigit() for p in args.models.iterdir()):
        export(model, args.models, max(start, 1))
    x, y = data(0)
    model.fit(
        x, y, epochs=10**9, initial_epoch=start, batch_size=64, verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(str(args.checkpoints / CHECKPOINT),
                                            save_weights_only=True),
            Housekeeping(args),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
