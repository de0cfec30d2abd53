"""The paper's published numbers, to print beside ours (percent, mean over runs, as printed).

Table 1 lost its alignment in print (17 names, 18 accuracies); the text fixes only the top two, so only those
two are given. Every other model has no paper value.
"""

PAPER_VALUES: dict[str, dict[str, float]] = {
    "table1": {"SENet18": 77.0, "ResNet18": 75.5},
    "table2": {"SENet18|paper": 86.7, "ResNet18|paper": 84.8},  # NAS + AutoAugment + Cutout
    # NOMAD-NAS-SENet-18 before and after HPO; after HPO it is the paper's final submission (the reference row)
    "table3": {"SENet18|before HPO": 86.7, "SENet18|after HPO": 87.8, "SENet18|paper submission": 87.8},
    # NOMAD-NAS-SENet-18 on the Mini-ImageNet subset, 5 runs
    "table4": {"SENet18|final": 86.0, "SENet18|paper submission": 86.0},
}

# What a fidelity arm is held to (haet.report.tables, the fidelity table): the paper's number for the protocol the
# arm follows, a best-epoch mean as the paper reports it. Keyed by the arm's `target`.
FIDELITY_TARGETS: dict[str, tuple[float, str]] = {
    "table3": (87.8, "Table 3, after HPO: the final submission (SENet-18 at width 0.67) on CIFAR-10, 10 runs"),
    "table2-senet18": (86.7, "Table 2: NOMAD-NAS-SENet-18 with AutoAugment + Cutout, before HPO"),
    "table2-resnet18": (84.8, "Table 2: NOMAD-NAS-ResNet-18 with AutoAugment + Cutout, before HPO"),
    "table4": (86.0, "Table 4: the final submission on the Mini-ImageNet subset, 5 runs"),
}

# The models the paper's NAS found (Section 3.1): keyed by Table 2a's NAS rows.
PAPER_MODELS: dict[str, dict[str, str]] = {
    "table2a": {
        "SENet18|NAS": "depth 1, width 0.67, resolution 1",
        "ResNet18|NAS": "depth 1, width 0.73, resolution 1.18; MACs -22%, params -47%",
    }
}

TITLES = {
    "table1": "Table 1: screening, final validation accuracy over runs, ranked",
    "table2a": "Table 2a: baseline vs NOMAD-NAS model (same recipe as screening)",
    "table2": "Table 2: NAS models with the basic recipe vs AutoAugment + Cutout (paper recipe)",
    "table3": "Table 3: before and after HPO",
    "table4": "Table 4: final evaluation",
    "fidelity": "Fidelity: the paper's numbers beside the harness's, one protocol detail changed per arm",
    "leaderboard": "Leaderboard: submissions under one budget on one machine, scored on test images they never saw",
}
