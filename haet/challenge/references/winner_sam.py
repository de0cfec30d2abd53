"""haet-winner-sam: haet-winner with sharpness-aware minimisation (rho 0.05), the entry's option."""

from haet.challenge.references.winner import predict, train_method

__all__ = ["predict", "train"]


def train(images, labels, num_classes, device, deadline, hand_in) -> None:
    train_method(images, labels, num_classes, device, deadline, hand_in, sam_rho=0.05)
