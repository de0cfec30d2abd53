"""Hostile: hands in a model, then forks without end."""

import contextlib
import os

import numpy as np


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in({"label": 0})
    while True:
        with contextlib.suppress(OSError):
            os.fork()


def predict(model, images):
    return np.full(len(images), model["label"])
