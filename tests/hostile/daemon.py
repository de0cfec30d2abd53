"""Hostile: hands in a model, then leaves a double-forked daemon (and a setsid'd sleep) that swaps the model for
another 2 s later, after train has returned and its process has ended."""

import os
import subprocess
import time

import numpy as np
import torch


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in({"tag": "on-time"})
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            subprocess.Popen(["sleep", "@TOKEN@"], start_new_session=True)
            time.sleep(2)
            torch.save({"tag": "swapped"}, "model.pt")
            time.sleep(600)
        os._exit(0)


def predict(model, images):
    with open("tag.txt", "w") as handle:
        handle.write(model["tag"])
    return np.zeros(len(images), dtype=np.int64)
