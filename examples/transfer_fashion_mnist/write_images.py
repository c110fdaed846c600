"""Step 2 of the transfer-learning example: write Fashion-MNIST classes 5-9 as PNG files in
class folders, the layout ``mlnnkit transfer --data`` reads:

    OUT/train/<class>/*.png   50 labelled training images per class (the first 50 of each
                              class in the training set: 250 images in all)
    OUT/test/<class>/*.png    every test image of classes 5-9 (1,000 per class)

Usage: python examples/transfer_fashion_mnist/write_images.py OUT [--per-class 50]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported

import numpy as np

NAMES = {5: "sandal", 6: "shirt", 7: "sneaker", 8: "bag", 9: "ankle_boot"}


def write(out: Path, per_class: int = 50) -> dict[str, int]:
    import keras

    from mlnnkit.data.images import load_arrays

    a = load_arrays("fashion_mnist")
    counts = {}
    for split, x, y, limit in (
        ("train", a["x_train"], a["y_train"], per_class),
        ("test", a["x_test"], a["y_test"], None),
    ):
        for label, name in NAMES.items():
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            idx = np.flatnonzero(y == label)[:limit]
            for i in idx:
                keras.utils.save_img(folder / f"{i:05d}.png", x[i][:, :, None], scale=False)
            counts[f"{split}/{name}"] = len(idx)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output folder (train/ and test/ are made in it)")
    p.add_argument("--per-class", type=int, default=50, help="training images per class")
    args = p.parse_args(argv)
    counts = write(args.out, args.per_class)
    n_train = sum(v for k, v in counts.items() if k.startswith("train"))
    n_test = sum(v for k, v in counts.items() if k.startswith("test"))
    print(
        f"{n_train} training and {n_test} test images of 5 classes -> {args.out}/train, {args.out}/test"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
