"""Hostile: patches the child's np.save so that the predictions file the harness reads is, by MODE, a symlink to
a file of the machine, a FIFO, an array of pickled objects or a 1 GiB file."""

import os

import numpy as np

MODE = "@MODE@"


def _swap(path, array, **kwargs):
    if MODE == "symlink":
        os.symlink("/etc/passwd", path)
    elif MODE == "fifo":
        os.mkfifo(path)
    elif MODE == "pickle":
        with open(path, "wb") as handle:
            np.lib.format.write_array(handle, np.array([{"all": "right"}] * len(array), dtype=object))
    elif MODE == "huge":
        with open(path, "wb") as handle:
            handle.truncate(2**30)


def train(images, labels, num_classes, device, deadline, hand_in):
    hand_in({"label": 0})


def predict(model, images):
    np.save = _swap
    return np.zeros(len(images), dtype=np.int64)
