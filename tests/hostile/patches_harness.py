"""Hostile: at import, leaves a mark where the harness runs and patches the harness's scoring to a perfect score."""

import contextlib

import numpy as np

with contextlib.suppress(OSError), open("@MARKER@", "w") as mark:
    mark.write("imported where the harness runs")
try:
    import haet.challenge.runner as runner

    runner.read_predictions = lambda folder, count, num_classes: (np.zeros(count, dtype=np.int64), None)
    runner.record_body.__globals__["SUBMISSION_NOTE"] = "patched"
    import haet.files

    haet.files.sha256_bytes = lambda data: "0" * 64
except Exception:
    pass


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in({"label": 0})


def predict(model, images):
    return np.full(len(images), model["label"])
