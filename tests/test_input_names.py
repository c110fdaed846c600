"""Inputs are taken by the model's own names; a file that has some of them but not all is
refused rather than read by position (which would silently feed the wrong variables)."""

from __future__ import annotations

import keras
import numpy as np

from mlnnkit.layers import InputScaling


def _named_model(path):
    x = keras.Input((3,), name="inputs")
    y = InputScaling([0.0] * 3, [1.0] * 3, names=["a", "b", "c"])(x)
    model = keras.Model(x, keras.layers.Dense(1, name="out")(y))
    model.save(path)


def test_partly_matching_columns_are_refused(tmp_path, cli):
    _named_model(tmp_path / "m.keras")
    (tmp_path / "x.csv").write_text("a,x,c\n1,2,3\n4,5,6\n")
    code, _, err = cli("predict", tmp_path / "m.keras", tmp_path / "x.csv", "-o", tmp_path / "y.csv")
    assert code == 2
    assert err.startswith("error: ") and "b are not in the file" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y.csv").exists()


def test_matching_columns_are_taken_by_name_in_any_order(tmp_path, cli):
    _named_model(tmp_path / "m.keras")
    (tmp_path / "x.csv").write_text("c,a,b\n3,1,2\n")
    (tmp_path / "ref.csv").write_text("a,b,c\n1,2,3\n")
    code, out, _ = cli("predict", tmp_path / "m.keras", tmp_path / "x.csv", "-o", tmp_path / "y.csv")
    assert code == 0 and "inputs a, b, c" in out
    assert cli("predict", tmp_path / "m.keras", tmp_path / "ref.csv", "-o", tmp_path / "r.csv")[0] == 0
    y = np.loadtxt(tmp_path / "y.csv", delimiter=",", skiprows=1)
    r = np.loadtxt(tmp_path / "r.csv", delimiter=",", skiprows=1)
    assert np.array_equal(y, r)
