"""Data sources on small generated data (and the real Debian Fashion-MNIST when installed)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pandas as pd
import pytest

from mlnnkit.config import parse_config
from mlnnkit.data import load_data
from mlnnkit.data.images import DEBIAN_DIRS, read_idx
from mlnnkit.errors import UserError
from tests.helpers import make_regression_csv, regression_config


def write_idx(path, arr: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_folder(folder, n_train=60, n_test=20, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, size=(n_train, 28, 28))
    ys = np.arange(n_train) % 10
    xt = rng.integers(0, 256, size=(n_test, 28, 28))
    yt = np.arange(n_test) % 10
    write_idx(folder / "train-images-idx3-ubyte", xs, gz)
    write_idx(folder / "train-labels-idx1-ubyte", ys, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", xt, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", yt, gz)
    return xs, ys, xt, yt


def image_cfg(folder, **data):
    return parse_config(
        {
            "data": {"source": "mnist", "data_dir": str(folder), **data},
            "model": {"layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10}]},
        }
    )


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    xs, _, _, yt = make_idx_folder(tmp_path / "m", gz=gz)
    ds = load_data(image_cfg(tmp_path / "m"))
    assert ds.x_train.shape == (60, 28, 28) and ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_train, xs / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, yt)
    assert ds.x_train.max() <= 1.0


def test_idx_subset_and_classes(tmp_path):
    make_idx_folder(tmp_path / "m")
    ds = load_data(image_cfg(tmp_path / "m", classes=[5, 6, 7, 8, 9], train_size=12, test_size=4))
    assert len(ds.x_train) == 12 and len(ds.x_test) == 4
    assert set(np.unique(ds.y_train)) <= {0, 1, 2, 3, 4}  # relabelled 5..9 -> 0..4


def test_idx_errors(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        load_data(image_cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither the four idx files"):
        load_data(image_cfg(tmp_path / "empty"))
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(UserError, match="not an idx file"):
        read_idx(bad)
    make_idx_folder(tmp_path / "cut", gz=False)
    p = tmp_path / "cut" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(UserError, match="cut short"):
        load_data(image_cfg(tmp_path / "cut"))


@pytest.mark.skipif(not DEBIAN_DIRS["fashion_mnist"].is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian():
    cfg = parse_config(
        {
            "data": {"source": "fashion_mnist", "train_size": 100, "test_size": 50},
            "model": {"layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10}]},
        }
    )
    ds = load_data(cfg)
    assert ds.x_train.shape == (100, 28, 28) and ds.x_test.shape == (50, 28, 28)
    assert set(np.unique(ds.y_train)) <= set(range(10)) and len(np.unique(ds.y_train)) > 5


def test_auto_mpg():
    cfg = parse_config(
        {"data": {"source": "auto_mpg"}, "model": {"layers": [{"type": "Dense", "units": 1}]}}
    )
    ds = load_data(cfg)
    assert len(ds.x_train) + len(ds.x_test) == 392  # 398 cars, 6 without horsepower
    assert len(ds.x_test) == 78
    assert ds.x_train.shape[1] == 9 and ds.feature_names[-3:] == ["Origin_USA", "Origin_Europe", "Origin_Japan"]
    onehot = ds.x_train[:, -3:]
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    assert 9 < ds.y_train.min() and ds.y_train.max() < 47.0
    # seeded split: same seed same split, other seed other split
    again = load_data(cfg)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    other = load_data(cfg.model_copy(update={"seed": 5}))
    assert not np.array_equal(other.y_test, ds.y_test)


def test_csv_split_glob_and_validation(tmp_path):
    make_regression_csv(tmp_path / "d.csv", n=100, n_features=4)
    cfg = parse_config(regression_config(tmp_path / "d.csv"))
    ds = load_data(cfg)
    assert ds.feature_names == ["f0", "f1", "f2", "f3"]
    assert len(ds.x_test) == 20 and len(ds.x_train) == 64 and len(ds.x_val) == 16
    assert ds.y_train.shape == (64, 1)


def test_npz_and_parquet_tables(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    np.savez(tmp_path / "t.npz", x=x, y=y)
    cfg = parse_config(
        regression_config(tmp_path / "t.npz", **{"data.features": "x", "data.targets": "y", "data.source": "npz"})
    )
    ds = load_data(cfg)
    assert ds.x_train.shape[1] == 3 and ds.y_train.shape[1] == 2
    assert ds.feature_names == ["x[0]", "x[1]", "x[2]"]
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "t": y[:, 0]})
    df.to_parquet(tmp_path / "t.parquet")
    cfg = parse_config(
        regression_config(
            tmp_path / "t.parquet", **{"data.features": "a,b", "data.targets": "t", "data.source": "parquet"}
        )
    )
    ds = load_data(cfg)
    assert ds.x_train.shape[1] == 2
    all_rows = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    np.testing.assert_allclose(np.sort(all_rows[:, 0]), np.sort(x[:, 0]).astype("float32"))


def test_table_errors(tmp_path):
    make_regression_csv(tmp_path / "d.csv", n=10)
    with pytest.raises(UserError, match="no column matches 'nope'"):
        load_data(parse_config(regression_config(tmp_path / "d.csv", **{"data.features": "nope"})))
    with pytest.raises(UserError, match="data file not found"):
        load_data(parse_config(regression_config(tmp_path / "x.csv")))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read npz"):
        load_data(parse_config(regression_config(tmp_path / "bad.npz", **{"data.source": "npz"})))
