"""`mlnnkit transfer` on a tiny saved CNN base and generated images in class folders."""

from __future__ import annotations

import json
from pathlib import Path

import keras  # the backend is set by conftest.py
import numpy as np
import pytest

from mlnnkit import transfer as tl
from tests.test_cli import assert_one_line_error

CLASSES = ("horizontal", "square", "vertical")


def pattern(c: int, rng) -> np.ndarray:
    a = rng.uniform(0, 50, (10, 10))
    if c == 0:
        a[4:6, 1:9] += 200
    elif c == 1:
        a[3:7, 3:7] += 150
    else:
        a[1:9, 4:6] += 200
    return np.clip(a, 0, 255).astype("uint8")[:, :, None]


def write_images(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            keras.utils.save_img(root / name / f"{i}.png", pattern(c, rng), scale=False)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(training images, test images, saved tiny CNN base) — the base's input is (10, 10),
    without a channel axis, as `mlnnkit train` builds image models."""
    d = tmp_path_factory.mktemp("tl")
    train = write_images(d / "train", 10, 0)
    test = write_images(d / "test", 6, 1)
    keras.utils.set_random_seed(0)
    base = keras.Sequential(
        [
            keras.Input((10, 10)),
            keras.layers.Reshape((10, 10, 1), name="reshape"),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(8, activation="relu", name="features"),
            keras.layers.Dense(2, activation="softmax", name="old_head"),
        ]
    )
    base.save(d / "base.keras")
    return train, test, d / "base.keras"


def test_two_stages_report_and_frozen_base(folders, tmp_path, cli):
    train, test, base = folders
    out = tmp_path / "out"
    code, stdout, err = cli(
        "transfer",
        "--base",
        base,
        "--data",
        train,
        "--test-data",
        test,
        "-o",
        out,
        "--epochs",
        "3",
        "--fine-tune-epochs",
        "2",
        "--unfreeze",
        "3",
        "--lr",
        "0.01",
        "--compare-scratch",
    )
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["classes"] == list(CLASSES)
    assert rep["cut_at"] == "features"  # default: the input of the last layer
    assert (rep["n_train"], rep["n_val"], rep["n_test"]) == (24, 6, 18)
    assert rep["unfrozen_layers"] == ["conv", "features"]  # top 3: conv, flatten, features
    for key in ("stage1", "stage2", "scratch"):
        assert 0.0 <= rep[key]["accuracy"] <= 1.0 and rep[key]["loss"] > 0
    assert set(rep["per_class"]["square"]) == {"stage1", "stage2", "scratch"}
    # the stage 2 numbers are those of the saved model on the test images
    imgs = tl.read_images(test, (10, 10), "grayscale")
    model = keras.saving.load_model(out / "model.keras")
    acc = np.mean(np.argmax(model.predict(imgs.x.astype("float32"), verbose=0), -1) == imgs.y)
    assert rep["stage2"]["accuracy"] == pytest.approx(acc)
    assert "test accuracy: stage 1" in stdout and "from scratch" in stdout
    for name in ("history.png", "confusion.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_stage1_trains_the_head_only(folders, tmp_path):
    train, test, base = folders
    original = keras.saving.load_model(base)
    res = tl.run(
        base,
        train,
        tmp_path / "o",
        test_data=test,
        epochs=3,
        fine_tune_epochs=0,
        lr=0.05,
        cut_at="flatten",
    )
    inner = res.model.get_layer("base")
    assert [ly.name for ly in inner.layers][-1] == "flatten"
    for a, b in zip(
        original.get_layer("conv").get_weights(), inner.get_layer("conv").get_weights()
    ):
        assert np.array_equal(a, b)  # frozen base, bit for bit
    assert "stage2" not in res.report and res.report["epochs_run"]["stage2"] == 0


def test_augmentation_layers_train_only(folders):
    _, _, base = folders
    cut, _ = tl.saved_base(base, "flatten")
    model = tl.build_transfer_model(cut, 3, (10, 10, 1), augment=True)
    names = [ly.name for ly in model.layers]
    assert names[1:3] == ["augment_flip", "augment_rotation"]
    x = np.random.default_rng(0).uniform(0, 255, (4, 10, 10, 1)).astype("float32")
    a = keras.ops.convert_to_numpy(model(x, training=False))
    b = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    np.testing.assert_allclose(a, b, rtol=1e-6)  # identity outside training
    many = np.random.default_rng(1).uniform(0, 255, (64, 10, 10, 1)).astype("float32")
    flipped = keras.ops.convert_to_numpy(model.get_layer("augment_flip")(many, training=True))
    same = [np.array_equal(f, m) for f, m in zip(flipped, many)]
    assert 0 < sum(same) < 64  # some images flipped in training, some not
    mirrored = [np.array_equal(f, m[:, ::-1]) for f, m in zip(flipped, many)]
    assert all(s or m for s, m in zip(same, mirrored))


@pytest.mark.parametrize("app", ["MobileNetV2", "ResNet50", "DenseNet121"])
def test_application_preprocessing_is_exact(app):
    import importlib

    fn = getattr(keras.applications, app)
    layer = tl._preprocess_layer(fn)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    want = importlib.import_module(fn.__module__).preprocess_input(pixels.copy())
    got = keras.ops.convert_to_numpy(layer(pixels))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_transfer_errors(folders, tmp_path, cli):
    train, _, base = folders
    code, _, err = cli("transfer", "--base", "MobileNetv2", "--data", train, "-o", tmp_path / "o")
    assert_one_line_error(
        code, err, "not a saved model file nor a keras.applications network", "MobileNetV2"
    )
    code, _, err = cli(
        "transfer", "--base", base, "--data", train, "-o", tmp_path / "o", "--cut-at", "convv"
    )
    assert_one_line_error(code, err, "no layer 'convv'", "conv, flatten")
    (tmp_path / "one" / "only").mkdir(parents=True)
    code, _, err = cli("transfer", "--base", base, "--data", tmp_path / "one", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "one subfolder per class")
    code, _, err = cli(
        "transfer",
        "--base",
        base,
        "--data",
        train,
        "--test-data",
        tmp_path / "one",
        "-o",
        tmp_path / "o",
    )
    assert_one_line_error(code, err, "no subfolder for the classes horizontal")
    assert not (tmp_path / "o").exists()
