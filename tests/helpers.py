"""Small generated data and configs for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tomli_w


def make_regression_csv(path: Path, n: int = 400, n_features: int = 3, seed: int = 0) -> Path:
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    y = x @ np.linspace(1.0, -1.0, n_features) + 0.5 * np.sin(x[:, 0]) + 0.01 * rng.normal(size=n)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(n_features)])
    df["target"] = y
    df.to_csv(path, index=False)
    return path


def regression_config(csv: Path, **over) -> dict:
    cfg = {
        "name": "tiny",
        "seed": 1,
        "data": {"source": "csv", "path": str(csv), "features": "f*", "targets": ["target"]},
        "model": {
            "layers": [
                {"type": "Dense", "units": 16, "activation": "tanh"},
                {"type": "Dense", "units": 1},
            ]
        },
        "compile": {"optimizer": "adam", "learning_rate": 0.01, "loss": "mse", "metrics": ["mae"]},
        "fit": {"epochs": 5, "batch_size": 32, "validation_split": 0.2},
    }
    for key, value in over.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(tomli_w.dumps(cfg))
    return path
