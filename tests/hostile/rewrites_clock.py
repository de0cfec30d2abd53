"""Hostile: rewrites what the old harness read its start from, marks itself started again, trains past its
budget, then writes its model straight into place (hand_in bypassed) and hands it in too."""

import json
import os
import sys
import time

import numpy as np
import torch


def train(images, labels, num_classes, device, deadline, hand_in):
    work = sys.argv[-1]  # the child's work folder, as the harness launched it
    with open(os.path.join(work, "started.json"), "w") as handle:
        json.dump({"at": time.time() + 10**6}, handle)
    if os.path.exists(os.path.join(work, "ready")):
        os.utime(os.path.join(work, "ready"))
    now = getattr(deadline, "now", time.time)
    while now() < deadline + 0.5:  # past the budget
        pass
    torch.save({"label": 0}, os.path.join(work, "model.pt"))
    hand_in({"label": 0})


def predict(model, images):
    return np.full(len(images), model["label"])
