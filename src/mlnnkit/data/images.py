"""MNIST and Fashion-MNIST from the standard idx files.

Where the files are looked for, in order:

1. ``data.data_dir`` of the config (idx files, gzipped or not, or Keras's ``mnist.npz``);
2. the folder Debian installs them in (``apt-get install dataset-fashion-mnist`` gives
   ``/usr/share/datasets/fashion-mnist``);
3. Keras's own cache / download (``keras.datasets.<name>.load_data()``).

With none of them available the run stops with a message saying what to install or pass.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from mlnnkit.data._base import Dataset, SourceConfig
from mlnnkit.errors import UserError


class ImageSource(SourceConfig):
    """MNIST-style image sets: the standard idx files, from a local folder or Keras."""

    source: Literal["mnist", "fashion_mnist"]
    data_dir: Path | None = Field(
        None,
        description="Folder with the four idx(.gz) files (or mnist.npz). Default: Debian's "
        "/usr/share/datasets/<name>, then the Keras cache/download.",
    )
    train_size: int | None = Field(None, gt=0, description="Use only the first N training images.")
    test_size: int | None = Field(None, gt=0, description="Use only the first N test images.")
    classes: list[int] | None = Field(None, description="Keep only these labels (relabelled 0..k-1).")
    scale: float = Field(255.0, gt=0, description="Pixels are divided by this (0..255 -> 0..1).")


CONFIG = ImageSource  # this source's part of the run config

DEBIAN_DIRS = {
    "fashion_mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (optionally gzipped) into an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read idx file: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path}: not an idx file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise UserError(
            f"{path}: idx file is cut short or padded ({len(body)} bytes of data, "
            f"header says {expected})"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None


def _from_folder(folder: Path) -> dict[str, np.ndarray] | None:
    npz = folder / "mnist.npz"
    if npz.exists():
        with np.load(npz) as f:
            return {k: f[k] for k in FILES}
    paths = {k: _find(folder, stem) for k, stem in FILES.items()}
    if all(paths.values()):
        return {k: read_idx(p) for k, p in paths.items()}
    return None


def _from_keras(name: str) -> dict[str, np.ndarray] | None:
    import keras

    loader = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception:  # noqa: BLE001 - any failure here means "not available offline"
        return None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_arrays(name: str, data_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The four raw arrays (uint8 images, integer labels) of ``name``."""
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise UserError(f"data.data_dir: folder not found: {data_dir}")
        arrays = _from_folder(Path(data_dir))
        if arrays is None:
            raise UserError(
                f"data.data_dir: {data_dir} has neither the four idx files "
                f"({', '.join(FILES.values())}, optionally .gz) nor mnist.npz"
            )
        return arrays
    debian = DEBIAN_DIRS[name]
    if debian.is_dir() and (arrays := _from_folder(debian)) is not None:
        return arrays
    arrays = _from_keras(name)
    if arrays is None:
        hint = (
            "install Debian's package (apt-get install dataset-fashion-mnist)"
            if name == "fashion_mnist"
            else "put the idx files or mnist.npz in a folder"
        )
        raise UserError(
            f"{name} is not available: not in {debian} and Keras could not download it; "
            f"{hint} and/or set data.data_dir = \"FOLDER\" in the config"
        )
    return arrays


def _scaled(raw: np.ndarray, scale: float) -> np.ndarray:
    """``raw / scale`` in float32, in an aligned array (see ``data.aligned_empty``)."""
    from mlnnkit.data._base import aligned_empty

    out = aligned_empty(raw.shape, "float32")
    np.divide(raw, np.float32(scale), out=out, dtype="float32")
    return out


def load(src, base_dir: Path = Path("."), *, seed: int = 0) -> Dataset:
    """Load an image set (``seed`` is unused: the files fix the train/test split)."""
    data_dir = src.data_dir
    if data_dir is not None and not Path(data_dir).is_absolute():
        data_dir = Path(base_dir) / data_dir
    a = load_arrays(src.source, data_dir)
    x_train, y_train, x_test, y_test = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
    if src.classes:
        keep = np.asarray(src.classes)
        lut = {c: i for i, c in enumerate(src.classes)}
        mtr, mte = np.isin(y_train, keep), np.isin(y_test, keep)
        x_train, x_test = x_train[mtr], x_test[mte]
        y_train = np.vectorize(lut.get)(y_train[mtr]) if mtr.any() else y_train[mtr]
        y_test = np.vectorize(lut.get)(y_test[mte]) if mte.any() else y_test[mte]
    if src.train_size:
        x_train, y_train = x_train[: src.train_size], y_train[: src.train_size]
    if src.test_size:
        x_test, y_test = x_test[: src.test_size], y_test[: src.test_size]
    return Dataset(
        x_train=_scaled(x_train, src.scale),
        y_train=np.asarray(y_train, dtype="int32"),
        x_test=_scaled(x_test, src.scale),
        y_test=np.asarray(y_test, dtype="int32"),
        description=src.source,
        meta={"classes": src.classes},
    )
