"""Hostile: hands in a pickle that runs a command wherever it is loaded."""

import os

import numpy as np


class Payload:
    def __reduce__(self):
        return os.system, ("touch @MARKER@",)


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in(Payload())


def predict(model, images):
    return np.zeros(len(images), dtype=np.int64)
