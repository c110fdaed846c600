"""Acceptance check of `mlnnkit tune` on the Fashion-MNIST subset, side by side with the
seed configuration in one run:

1. `mlnnkit train examples/tune_fashion_mnist.toml` (the values outside [tune]: the seed
   network) -> its validation accuracy on the subset;
2. `mlnnkit tune` of the same file (20 complete trials, median pruning) -> wall time and
   the best trial's validation accuracy.

Goal: the study finishes in under 10 minutes on 2 cores and its best validation accuracy
beats the seed configuration's (same subset, same epochs, same seed).

    python benchmarks/tune_fashion_mnist.py [--trials 20] [--out runs/bench_tune]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "tune_fashion_mnist.toml"


def mlnnkit(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlnnkit", *args], check=True, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_tune")
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)

    t_seed = mlnnkit("train", str(CONFIG), "--out", str(a.out / "seed"))
    seed = json.loads((a.out / "seed" / "metrics.json").read_text())["validation"]["accuracy"]
    t_tune = mlnnkit("tune", str(CONFIG), "--out", str(a.out / "tune"), "--trials", str(a.trials))
    best = json.loads((a.out / "tune" / "best_model.json").read_text())

    import pandas as pd

    df = pd.read_csv(a.out / "tune" / "trials.csv")
    counts = df["state"].value_counts().to_dict()
    print(f"seed config : val_accuracy {seed:.4f}  ({t_seed:.0f} s)")
    print(f"tune        : val_accuracy {best['value']:.4f} (trial {best['trial']}), "
          f"{counts} in {t_tune:.0f} s = {t_tune / 60:.1f} min")
    print(f"best - seed : {best['value'] - seed:+.4f}   "
          f"{'OK' if best['value'] > seed else 'NOT BEATEN'}; "
          f"time {'OK' if t_tune < 600 else 'OVER 10 min'}")


if __name__ == "__main__":
    main()
