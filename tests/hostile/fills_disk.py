"""Hostile: hands in a model, then writes @MODE@: one file without end, or many files until the disk is full."""

import numpy as np

MODE = "@MODE@"


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in({"label": 0})
    block = b"\0" * 2**20
    for index in range(10**6):
        with open("big.bin" if MODE == "one-file" else f"part{index}.bin", "ab") as handle:
            for _ in range(8 if MODE == "many-files" else 10**6):
                handle.write(block)


def predict(model, images):
    return np.full(len(images), model["label"])
