# Over 400 lines: one command's steps (images, base, two-stage fit, report); run() alone is ~200.
"""Image transfer learning: reuse a pretrained network's features for a new task.

``mlnnkit transfer --base NAME_OR_MODEL --data IMAGE_DIR -o OUTDIR`` is :func:`run`:

1. images from a folder of class subfolders (``keras.utils.image_dataset_from_directory``),
   split at random (seeded) into training, validation (early stopping) and test rows, or
   tested on a separate ``test_data`` folder with the same classes;
2. the base: a ``keras.applications`` network (``MobileNetV2``, ...) with ImageNet weights
   (downloaded by Keras; without internet access it stops with a message saying so), or any
   saved model cut at a named layer (``cut_at``; default: the input of its last layer);
3. stage 1: a new head (global average pooling when the features are maps, dropout, a
   softmax Dense layer) trained on the frozen base;
4. stage 2: the top ``unfreeze`` layers of the base (default all) trained too, at a lower
   learning rate; the base always runs in inference mode (its BatchNormalization statistics
   stay as they were, as in the Keras transfer-learning guide);
5. optionally the same network trained from a fresh initialization on the same images
   (``compare_scratch``), and optional augmentation layers (random flips and rotations);
6. OUTDIR: ``report.json`` (test accuracy and loss of each stage and of scratch, per class),
   ``history.png`` (both stages), ``confusion.png``, ``model.keras``.

Every fit goes through :func:`mlnnkit.train.fit`.

Example:
    >>> from mlnnkit import transfer
    >>> res = transfer.run("pretrained.keras", "images/", "runs/tl",  # doctest: +SKIP
    ...                    test_data="test_images/", compare_scratch=True)
    >>> res.report["stage2"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mlnnkit import _atomic, _rundir
from mlnnkit.errors import UserError


# --------------------------------------------------------------------------- images
@dataclass
class Images:
    """Images as uint8 arrays (rows, height, width, channels) and integer labels."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]


def read_images(
    folder: str | Path,
    image_size: tuple[int, int],
    color_mode: str = "rgb",
    class_names: list[str] | None = None,
) -> Images:
    """All images of a folder of class subfolders, resized to ``image_size``, in memory.

    ``class_names`` fixes the classes and their order (to read a test folder like the
    training one); by default the subfolders in alphabetical order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if class_names is None and len(subdirs) < 2:
        raise UserError(
            f"{folder}: needs one subfolder per class (at least 2), e.g. {folder}/cats/, "
            f"{folder}/dogs/; found {len(subdirs)}"
        )
    if class_names is not None:
        missing = [c for c in class_names if c not in subdirs]
        if missing:
            raise UserError(f"{folder}: no subfolder for the classes {', '.join(missing)}")
    try:
        ds = keras.utils.image_dataset_from_directory(
            folder,
            labels="inferred",
            label_mode="int",
            class_names=class_names,
            color_mode=color_mode,
            batch_size=256,
            image_size=tuple(image_size),
            shuffle=False,
            verbose=False,
            format=_dataset_format(),
        )
    except ValueError as e:
        raise UserError(f"{folder}: {' '.join(str(e).split())}") from None
    xs, ys = [], []
    for xb, yb in ds:
        xs.append(np.clip(np.rint(np.asarray(xb)), 0, 255).astype("uint8"))
        ys.append(np.asarray(yb).astype("int32"))
    if not xs:
        raise UserError(
            f"{folder}: no images (.png, .jpg, .jpeg, .bmp, .gif) in the class subfolders"
        )
    return Images(np.concatenate(xs), np.concatenate(ys), list(class_names or subdirs))


def _dataset_format() -> str:
    """``image_dataset_from_directory`` needs TensorFlow ("tf") or Grain ("grain")."""
    import importlib.util

    if importlib.util.find_spec("grain") is not None:
        return "grain"
    if importlib.util.find_spec("tensorflow") is not None:
        return "tf"
    raise UserError("reading image folders needs the 'grain' package: pip install grain")


# --------------------------------------------------------------------------- the base
APP_SIZE = 224


def application_names() -> list[str]:
    """Names of the ``keras.applications`` networks (MobileNetV2, ResNet50, ...)."""
    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def application_base(name: str, image_size: tuple[int, int] | None, weights: str | None):
    """A ``keras.applications`` network without its top, and its input preprocessing as a
    frozen per-pixel affine layer (fitted exactly to the network's ``preprocess_input``)."""
    fn = getattr(keras.applications, name, None)
    if fn is None or not callable(fn):
        import difflib

        close = difflib.get_close_matches(name, application_names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(
            f"--base {name!r}: not a saved model file nor a keras.applications network{hint}"
        )
    size = tuple(image_size or (APP_SIZE, APP_SIZE))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            base = fn(include_top=False, weights=weights, input_shape=(*size, 3))
    except ValueError as e:
        raise UserError(f"--base {name}: {' '.join(str(e).split())[:300]}") from None
    except Exception as e:  # noqa: BLE001 - urllib/socket errors of the weights download
        reason, fname = _download_failure(str(e))
        raise UserError(
            f"--base {name}: cannot download its ImageNet weights ({reason}); without "
            "internet access pass --weights none (random initial weights), or a saved model "
            "as --base (e.g. a .keras file, cut with --cut-at LAYER), or put "
            f"{fname or 'the weights file'} in ~/.keras/models/"
        ) from None
    finally:
        _pass_on(caught, name, size)
    return base, _preprocess_layer(fn)


def _pass_on(caught: list, name: str, size: tuple[int, ...]) -> None:
    """Keras's warnings while building the base: its "Weights for input shape (224, 224)
    will be loaded as the default" (image sizes it has no ImageNet weights for) becomes
    one note in mlnnkit's words; any other warning is issued again as it was."""
    for w in caught:
        text = " ".join(str(w.message).split())
        if "will be loaded as the default" in text:
            shape = text.split("Weights for input shape ", 1)[-1].split(" will be", 1)[0]
            _atomic.notify(
                f"note: --base {name}: Keras has ImageNet weights for a few square image "
                f"sizes only; for {size[0]}x{size[1]} it loads those of {shape}"
            )
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _download_failure(text: str) -> tuple[str, str | None]:
    """(short reason, weights file name) from Keras's download error, e.g. ``URL fetch
    failure on https://.../x_no_top.h5: None -- [Errno -3] Temporary failure in name
    resolution`` -> ``("[Errno -3] Temporary failure in name resolution", "x_no_top.h5")``;
    a long reason is cut at a word, never inside one.

    Example:
        >>> _download_failure("URL fetch failure on https://h/w.h5: None -- [Errno 111] Connection refused")
        ('[Errno 111] Connection refused', 'w.h5')
    """
    import re

    text = " ".join(text.split())
    m = re.search(r"https?://\S+?/([^/\s:]+)(?::|\s|$)", text)
    fname = m.group(1) if m else None
    reason = text.split(" -- ", 1)[1] if " -- " in text else text
    if len(reason) > 160:
        reason = reason[:160].rsplit(" ", 1)[0] + " ..."
    return reason or "no internet access?", fname


def _preprocess_layer(fn) -> keras.layers.Layer | None:
    """The application's ``preprocess_input`` as a frozen Dense(3) on the channel axis.

    Every Keras application scales pixels by a per-channel affine map (``x/127.5 - 1``,
    ImageNet mean/std, or RGB->BGR minus the mean): fit it exactly from probe pixels so the
    saved model needs no custom code. Returns None when it is the identity.
    """
    import importlib

    module = importlib.import_module(fn.__module__)
    pre = getattr(module, "preprocess_input", None)
    if pre is None:
        return None
    probe = np.random.default_rng(0).uniform(0, 255, (1, 64, 1, 3)).astype("float32")
    out = np.asarray(pre(probe.copy()), dtype="float64").reshape(-1, 3)
    a = np.concatenate([probe.reshape(-1, 3).astype("float64"), np.ones((64, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(a, out, rcond=None)
    if np.abs(a @ coef - out).max() > 1e-3 * max(1.0, np.abs(out).max()):
        raise UserError(f"{fn.__name__}: its preprocess_input is not a per-pixel affine map")
    if np.allclose(coef[:3], np.eye(3)) and np.allclose(coef[3], 0):
        return None
    layer = keras.layers.Dense(3, name="preprocess", trainable=False)
    layer.build((None, 3))
    layer.set_weights([coef[:3].astype("float32"), coef[3].astype("float32")])
    return layer


def saved_base(path: Path, cut_at: str | None) -> tuple[keras.Model, str]:
    """A saved model cut at layer ``cut_at`` (default: the input of its last layer)."""
    from mlnnkit.models import load_model

    model = load_model(path, compile=False)
    layers = model.layers
    if cut_at is None:
        if len(layers) < 2:
            raise UserError(f"{path}: has one layer only; nothing to cut (pass --cut-at LAYER)")
        cut_at = layers[-2].name
    names = [ly.name for ly in layers]
    if cut_at not in names:
        raise UserError(f"--cut-at: {path} has no layer {cut_at!r}; layers: {', '.join(names)}")
    base = keras.Model(model.inputs, model.get_layer(cut_at).output, name="base")
    return base, cut_at


# --------------------------------------------------------------------------- model
def build_transfer_model(
    base: keras.Model,
    n_classes: int,
    image_shape: tuple[int, int, int],
    *,
    preprocess: keras.layers.Layer | None = None,
    scale: float = 255.0,
    augment: bool = False,
    dropout: float = 0.2,
    seed: int = 0,
) -> keras.Model:
    """images (0..255) -> [augmentation] -> preprocessing -> base (inference mode) -> head.

    ``preprocess`` is an application's input preprocessing; for a saved base, pixels are
    divided by ``scale`` (255: the 0..1 pixels ``mlnnkit train`` feeds its image networks).
    """
    inputs = keras.Input(shape=image_shape, name="image")
    x = inputs
    if augment:
        x = keras.layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(x)
        x = keras.layers.RandomRotation(0.1, seed=seed, name="augment_rotation")(x)
    if preprocess is not None:
        x = preprocess(x)
    elif scale != 1:
        x = keras.layers.Rescaling(1.0 / scale, name="rescale")(x)
    want = tuple(base.inputs[0].shape[1:])
    if want != tuple(image_shape):
        if int(np.prod([d or 0 for d in want])) != int(np.prod(image_shape)):
            raise UserError(
                f"the base takes inputs of shape {want}, images are {tuple(image_shape)}: "
                "pass --image-size to match"
            )
        x = keras.layers.Reshape(want, name="to_base_shape")(x)
    x = base(x, training=False)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif len(x.shape) == 3:
        x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    elif len(x.shape) != 2:
        raise UserError(f"cannot put a head on base features of shape {tuple(x.shape[1:])}")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="transfer")


def set_trainable_top(base: keras.Model, n: int | None) -> list[str]:
    """Make the top ``n`` layers of ``base`` trainable (all when None), the rest frozen;
    returns the names of the trainable layers that have weights."""
    base.trainable = True
    layers = [ly for ly in base.layers if not isinstance(ly, keras.layers.InputLayer)]
    if n is None:
        n = len(layers)
    if n < 0:
        raise UserError(f"--unfreeze must be >= 0 (got {n})")
    cut = max(len(layers) - n, 0)
    for ly in layers[:cut]:
        ly.trainable = False
    return [ly.name for ly in layers[cut:] if ly.weights]


# --------------------------------------------------------------------------- run
@dataclass
class TransferResult:
    model: keras.Model
    report: dict[str, Any]
    history: dict[str, list[float]]
    scratch_model: keras.Model | None = None


def _compile(model: keras.Model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _stage(model, data, *, epochs, batch_size, patience, verbose, seed):
    from mlnnkit.train import fit

    (x_tr, y_tr), val = data
    keras.utils.set_random_seed(seed)
    return fit(
        model, x_tr, y_tr, epochs=epochs, batch_size=batch_size, validation_data=val,
        patience=patience, verbose=verbose,
    )  # fmt: skip


def _scores(
    model: keras.Model, x: np.ndarray, y: np.ndarray, n_classes: int
) -> tuple[dict, np.ndarray]:
    from mlnnkit.train import evaluate

    m = evaluate(model, x, y)
    pred = np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1)
    conf = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(conf, (y, pred), 1)
    return {"accuracy": float(np.mean(pred == y)), "loss": float(m.get("loss", np.nan))}, conf


@_rundir.one_writer("out_dir")  # one writer per run directory
def run(
    base: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    test_data: str | Path | None = None,
    cut_at: str | None = None,
    image_size: tuple[int, int] | None = None,
    weights: str | None = "imagenet",
    scale: float = 255.0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    epochs: int = 20,
    fine_tune_epochs: int = 20,
    unfreeze: int | None = None,
    lr: float = 1e-3,
    fine_tune_lr: float = 1e-5,
    batch_size: int = 32,
    patience: int = 5,
    dropout: float = 0.2,
    augment: bool = False,
    compare_scratch: bool = False,
    seed: int = 0,
    verbose: int | str = 0,
) -> TransferResult:
    """``mlnnkit transfer``: stage 1 (new head, frozen base), stage 2 (top ``unfreeze``
    layers of the base at ``fine_tune_lr``), optional scratch baseline; writes OUTDIR.

    Defaults: 20% of the images held out for testing (unless ``test_data``), 20% of the
    rest for early stopping (patience 5, best weights restored), Adam 1e-3 for up to 20
    epochs in stage 1, 1e-5 for up to 20 in stage 2 (0 epochs: no stage 2), batch 32.
    The scratch network is trained at ``lr`` for ``epochs + fine_tune_epochs`` epochs.
    """
    from mlnnkit.data.rows import split_rows
    from mlnnkit.report import plot_confusion, plot_history
    from mlnnkit.train import save_model

    if epochs < 1 or fine_tune_epochs < 0 or batch_size < 1:
        raise UserError("--epochs and --batch-size must be >= 1, --fine-tune-epochs >= 0")
    base_path = Path(base)
    if base_path.suffix.lower() in (".keras", ".h5", ".hdf5") or base_path.exists():
        base_model, cut = saved_base(base_path, cut_at)
        preprocess = None
        shape = tuple(base_model.inputs[0].shape[1:])
        if len(shape) == 2:  # (height, width): grayscale without a channel axis
            shape = (*shape, 1)
        if len(shape) != 3 or shape[-1] not in (1, 3, 4):
            raise UserError(f"{base}: the base takes inputs of shape {shape}, not images")
        size = tuple(image_size or shape[:2])
        if None in size:
            raise UserError(f"{base}: the base takes images of any size: pass --image-size H,W")
        channels = shape[-1]
        base_name = str(base)
    else:
        if cut_at is not None:
            raise UserError(
                "--cut-at applies to a saved model as --base, not to a keras.applications name"
            )
        w = None if weights in (None, "none") else weights
        base_model, preprocess = application_base(str(base), image_size, w)
        size, channels, cut = tuple(base_model.inputs[0].shape[1:3]), 3, None
        base_name = f"keras.applications.{base} (weights={w})"
    color_mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[channels]

    imgs = read_images(data_dir, size, color_mode)
    n_classes = len(imgs.class_names)
    if test_data is not None:
        test = read_images(test_data, size, color_mode, class_names=imgs.class_names)
        tr, va, _ = split_rows(len(imgs.y), 0.0, val_fraction, seed, where=f"{data_dir}: ")
        x_te, y_te = test.x, test.y
    else:
        tr, va, te = split_rows(
            len(imgs.y), test_fraction, val_fraction, seed, where=f"{data_dir}: "
        )
        if len(te) == 0:
            raise UserError("--test-fraction must be > 0 (or pass --test-data FOLDER)")
        x_te, y_te = imgs.x[te], imgs.y[te]
    x_tr, y_tr = imgs.x[tr], imgs.y[tr]
    val = (imgs.x[va], imgs.y[va]) if len(va) else None
    image_shape = (*size, channels)

    keras.utils.set_random_seed(seed)
    model = build_transfer_model(
        base_model,
        n_classes,
        image_shape,
        preprocess=preprocess,
        scale=scale,
        augment=augment,
        dropout=dropout,
        seed=seed,
    )
    scratch = keras.models.clone_model(model) if compare_scratch else None
    report: dict[str, Any] = {}
    confusions: dict[str, np.ndarray] = {}

    base_model.trainable = False
    _compile(model, lr)
    fr1 = _stage(
        model,
        ((x_tr, y_tr), val),
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        verbose=verbose,
        seed=seed,
    )
    report["stage1"], confusions["stage1"] = _scores(model, x_te, y_te, n_classes)
    history = dict(fr1.history)
    stage_starts: list[int] = []
    unfrozen: list[str] = []
    if fine_tune_epochs > 0:
        unfrozen = set_trainable_top(base_model, unfreeze)
        _compile(model, fine_tune_lr)
        fr2 = _stage(
            model,
            ((x_tr, y_tr), val),
            epochs=fine_tune_epochs,
            batch_size=batch_size,
            patience=patience,
            verbose=verbose,
            seed=seed + 1,
        )
        report["stage2"], confusions["stage2"] = _scores(model, x_te, y_te, n_classes)
        stage_starts = [fr1.epochs + 1]
        for k, v in fr2.history.items():
            history[k] = history.get(k, [np.nan] * fr1.epochs) + v
    if scratch is not None:
        for ly in scratch.layers:
            ly.trainable = True
        if preprocess is not None:
            scratch.get_layer("preprocess").set_weights(preprocess.get_weights())
            scratch.get_layer("preprocess").trainable = False
        _compile(scratch, lr)
        frs = _stage(
            scratch,
            ((x_tr, y_tr), val),
            epochs=epochs + fine_tune_epochs,
            batch_size=batch_size,
            patience=patience,
            verbose=verbose,
            seed=seed,
        )
        report["scratch"], confusions["scratch"] = _scores(scratch, x_te, y_te, n_classes)
        report["scratch_epochs_run"] = frs.epochs

    final = "stage2" if "stage2" in report else "stage1"
    counts = np.bincount(y_te, minlength=n_classes)
    report["per_class"] = {
        name: {key: float(c[i, i] / max(counts[i], 1)) for key, c in confusions.items()}
        for i, name in enumerate(imgs.class_names)
    }
    report.update(
        {
            "n_train": len(tr),
            "n_val": len(va),
            "n_test": len(y_te),
            "classes": imgs.class_names,
            "base": base_name,
            "cut_at": cut,
            "image_shape": list(image_shape),
            "augment": augment,
            "epochs_run": {
                "stage1": fr1.epochs,
                "stage2": len(history.get("loss", [])) - fr1.epochs,
            },
            "unfrozen_layers": unfrozen,
            "lr": lr,
            "fine_tune_lr": fine_tune_lr,
            "seed": seed,
        }
    )
    report["verdict"] = transfer_verdict(report, final)

    out = _atomic.make_dir(out_dir)
    for ly in model.layers:  # saved trainable, like any model: freezing is this run's choice
        ly.trainable = True
    save_model(model, out / "model.keras")
    files = ["report.json", "model.keras", "history.png", "confusion.png"]
    if scratch is not None:
        save_model(scratch, out / "scratch.keras")
        files.append("scratch.keras")
    plot_history(history, out / "history.png", title="stage 1 | stage 2", stage_starts=stage_starts)
    titles = {
        "stage1": "stage 1 (head)",
        "stage2": "stage 2 (fine-tuned)",
        "scratch": "from scratch",
    }
    plot_confusion(
        {titles[k]: c for k, c in confusions.items()}, imgs.class_names, out / "confusion.png"
    )
    report["files"] = files
    _atomic.write_json(out / "report.json", report)
    return TransferResult(model=model, report=report, history=history, scratch_model=scratch)


def transfer_verdict(report: dict, final: str = "stage2") -> str:
    """One line: test accuracy of each stage and, when measured, against scratch."""
    parts = [f"test accuracy: stage 1 {report['stage1']['accuracy']:.4f}"]
    if "stage2" in report:
        parts.append(f"stage 2 {report['stage2']['accuracy']:.4f}")
    text = ", ".join(parts)
    if "scratch" in report:
        d = 100 * (report[final]["accuracy"] - report["scratch"]["accuracy"])
        word = "beats" if d > 0 else "does not beat"
        text += (
            f"; from scratch {report['scratch']['accuracy']:.4f}: transfer {word} scratch "
            f"by {d:+.1f} points"
        )
    return text


__all__ = [
    "Images",
    "TransferResult",
    "application_base",
    "build_transfer_model",
    "read_images",
    "run",
    "saved_base",
    "set_trainable_top",
    "transfer_verdict",
]
