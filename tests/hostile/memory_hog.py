"""Hostile: hands in a model, then takes memory without end."""

import numpy as np


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in({"label": 0})
    hoard = []
    while True:
        hoard.append(np.ones(2**27, dtype=np.uint8))  # 128 MiB a time, every page touched


def predict(model, images):
    return np.full(len(images), model["label"])
