"""Hostile: tries to reach a server on this machine's loopback (where a leak would go) and hands in whether it
could."""

import socket

import numpy as np

PORT = int("@PORT@")


def train(images, labels, num_classes, device, deadline, hand_in):
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2) as connection:
            connection.sendall(b"labels please")
        connected = True
    except OSError:
        connected = False
    hand_in({"label": 0, "connected": connected})


def predict(model, images):
    return np.full(len(images), model["label"])
