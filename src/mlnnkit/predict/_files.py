"""File-level work of ``mlnnkit predict``: pair input files with outputs, open and
validate one job, stream it through the compiled model into its output, many files in turn.

Kinds, by suffix (one module each, see :mod:`mlnnkit.predict._kinds`):

- tables, one row per sample: ``.npy`` (memory-mapped; columns = the model's inputs in
  order), ``.csv`` and ``.parquet`` (columns chosen by name);
- scenes, variables of any shape whose every element is a sample: NetCDF (``.nc``,
  ``.nc4``, ``.cdf``; read with xarray, so fill values and ``scale_factor`` are decoded and
  masked pixels are NaN; ``group/name`` reaches variables in groups) and HDF5 (``.h5``,
  ``.hdf5``, ``.he5``; h5py, names are dataset paths). The outputs are written back into a
  copy of the input file as variables of the inputs' shape and dimensions, everything else
  in the file (variables, coordinates, attributes) kept.

Inputs are chosen by ``inputs`` (names, comma list or globs), else by the input names an
imported legacy network keeps in its scaling layer, else by position (all columns of a
table, or all data variables of a scene, when their number is the model's). Every output
file is written under a temporary name and renamed when complete; anything wrong with an
input raises :class:`~mlnnkit.errors.UserError` naming the file and what to pass instead.

Example:
    >>> from mlnnkit.predict import predict_file
    >>> predict_file(model, "granule.nc", "granule_out.nc", inputs="Rrs_*")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlnnkit import _atomic
from mlnnkit.errors import UserError
from mlnnkit.models import load_model_for_predict, model_io_names, model_io_sizes
from mlnnkit.predict._base import Source, _split_names
from mlnnkit.predict._kinds import KINDS, flags_sibling, is_scene, kind_of, open_sink, open_source

__all__ = [
    "FileResult",
    "check_not_an_input",
    "check_outputs_free",
    "error_text",
    "load_model_for_predict",
    "output_names",
    "plan_jobs",
    "predict_file",
    "predict_files",
    "prepare",
    "same_file",
]


def output_names(model, outputs, n_out: int, *, where: str = "") -> list[str]:
    """The output names: ``outputs`` (comma list, or one name with ``{}`` standing for
    each default name, e.g. ``{}_nn``) or the model's, else ``prediction`` (one output)
    or ``prediction_1`` ... ``prediction_N``.

    Example:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> output_names(net, None, 2), output_names(net, "nn_{}", 2)
        (['prediction_1', 'prediction_2'], ['nn_prediction_1', 'nn_prediction_2'])
    """
    given = _split_names(outputs)
    if given is not None and len(given) == 1 and "{}" in given[0]:
        template = given[0]
        if template.count("{}") != 1 or template == "{}":
            raise UserError(
                f"{where}--outputs {template!r}: a template has one {{}} (the output's own "
                "name) and something beside it, e.g. '{}_nn'"
            )
        return [template.replace("{}", n) for n in output_names(model, None, n_out)]
    if given is not None:
        if len(given) != n_out:
            raise UserError(f"{where}--outputs names {len(given)} outputs but the model has {n_out}")
        return given
    _, names = model_io_names(model)
    if names and len(names) == n_out:
        return names
    return ["prediction"] if n_out == 1 else [f"prediction_{i + 1}" for i in range(n_out)]


@dataclass
class FileResult:
    """What predicting one file did."""

    input: Path
    output: Path
    rows: int
    masked_rows: int
    seconds: float
    error: str | None = None
    flag_counts: dict[str, int] | None = None  # with flags: rows carrying each flag bit


def check_outputs_free(source: Source, names: list[str]) -> None:
    """Refuse output names that already exist as variables of a scene file."""
    clash = source.clashes(names)
    if clash:
        which = (
            f"variable {clash[0]!r} already exists"
            if len(clash) == 1
            else f"{len(clash)} output names already exist as variables ({', '.join(clash[:3])}"
            + (", ...)" if len(clash) > 3 else ")")
        )
        raise UserError(
            f"{source.path}: {which} in the file; pass --outputs with other names, e.g. "
            f"--outputs '{{}}_nn' for {names[0]}_nn, ..."
        )


def prepare(model, input_path, output_path, *, inputs=None, outputs=None, flags=False):
    """Open and validate one job: ``(source, output names, output kind, attrs)``; with
    ``flags``, the ``quality_flags`` name must be free too."""
    check_not_an_input(output_path, [input_path])
    n_in, n_out = model_io_sizes(model)
    out_kind = kind_of(output_path)
    model_in, _ = model_io_names(model)
    source = open_source(input_path, n_in, inputs, model_in)
    try:
        names = output_names(model, outputs, n_out, where=f"{input_path}: ")
        if flags:
            from mlnnkit.retrieval import FLAG_NAME

            if FLAG_NAME in names:
                raise UserError(f"{input_path}: an output is named {FLAG_NAME!r}, the flags' "
                                "name; pass --outputs with other names")  # fmt: skip
            if source.clashes([FLAG_NAME]):
                raise UserError(
                    f"{input_path}: {FLAG_NAME!r} already exists in the file (the output of "
                    "an earlier `mlnnkit predict --flags`?); predict from the original scene, "
                    "or without --flags"
                )
        check_outputs_free(source, names)
        if is_scene(out_kind) and source.kind != out_kind:
            raise UserError(
                f"{input_path}: outputs go into a copy of the input file, so the output must "
                f"be {source.kind} too (not {out_kind}); or choose a .npy, .csv or .parquet output"
            )
    except BaseException:
        source.close()
        raise
    attrs = {
        "source": "mlnnkit predict",
        "mlnnkit_model": str(getattr(model, "name", "model")),
        "mlnnkit_inputs": ",".join(source.columns),
    }
    return source, names, out_kind, attrs


def predict_file(
    model,
    input_path,
    output_path,
    *,
    inputs=None,
    outputs=None,
    chunk_rows: int | None = None,
    block_rows: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_open: Callable[[Source], None] | None = None,
    flags: bool = False,
    limit_margin: float = 0.02,
) -> FileResult:
    """Predict ``model`` on the inputs in ``input_path`` and write ``output_path``
    (atomically), block by block with bounded memory.

    Args:
        model: a ``keras.Model`` from rows of inputs to rows of outputs.
        input_path: ``.npy``, ``.csv``, ``.parquet``, NetCDF or HDF5 file.
        output_path: where to write; its suffix picks the kind (a scene's outputs go into
            a copy of the input file, so NetCDF -> NetCDF, HDF5 -> HDF5).
        inputs: names (comma list or globs) of the columns or variables that are the
            model's inputs, in the model's order; default: the model's own input names,
            else every column/variable when their number fits.
        outputs: names for the outputs; default: the model's own, else ``prediction``.
        chunk_rows: rows per compiled call (default: from the model's size).
        block_rows: rows read and written at a time (default: about 32 MB of data).
        progress: called with the number of rows finished, chunk by chunk.
        on_open: called with the opened source before the work starts (e.g. to size a
            progress bar from ``source.n_rows``).
        flags: also write the ``uint8`` quality flags (:mod:`mlnnkit.retrieval`), from
            the same compiled program: a ``quality_flags`` variable with CF attributes
            (scenes), a column (CSV, Parquet), or ``OUT.flags.npy`` beside a ``.npy``
            output. Default False.
        limit_margin: with ``flags``, the margin of ``output_at_limit`` (default 0.02).
    """
    from mlnnkit.predict._forward import compute_dtype, predict_stream

    t0 = time.perf_counter()
    output_path = Path(output_path)
    source, names, out_kind, attrs = prepare(
        model, input_path, output_path, inputs=inputs, outputs=outputs, flags=flags
    )
    masked = 0
    counts = None
    run_model = model
    flag_cf = None
    if flags:
        from mlnnkit.retrieval import flag_attrs, flag_counts, flags_model

        run_model = flags_model(model, limit_margin)  # one program: outputs and flags
        flag_cf = flag_attrs()
        counts = dict.fromkeys(flag_counts(np.zeros(0, np.uint8)), 0)
    sibling = flags_sibling(out_kind, output_path) if flags else None

    try:
        if on_open is not None:
            on_open(source)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(_atomic.atomic_path(output_path))
            tmp_flags = stack.enter_context(_atomic.atomic_path(sibling)) if sibling else None
            sink = open_sink(tmp, out_kind, source, names, attrs, compute_dtype(model),
                             flags=flag_cf, flags_path=tmp_flags)  # fmt: skip
            try:

                def write(start, out):
                    nonlocal masked
                    f = None
                    if flags:
                        out, f = out
                        for k, v in flag_counts(f).items():
                            counts[k] += v
                    y = out.reshape(len(out), -1)
                    masked += int(np.isnan(y[:, 0]).sum())  # masked rows are NaN throughout
                    sink.write(start, y, f) if flags else sink.write(start, y)

                rows = predict_stream(
                    run_model, source.blocks(block_rows), write,
                    chunk_rows=chunk_rows, workers=workers, progress=progress,
                )  # fmt: skip
            except BaseException:
                # The output is discarded; the sink's own complaint ("wrote 0 rows of N")
                # must not replace what stopped it (Ctrl-C, a read error).
                with contextlib.suppress(Exception):
                    sink.close()
                raise
            sink.close()
    finally:
        source.close()
    return FileResult(Path(input_path), output_path, rows, masked, time.perf_counter() - t0,
                      flag_counts=counts)  # fmt: skip


# ------------------------------------------------------------------------ many files


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same path once resolved (symlinks,
    ``..``), or, when both exist, the same inode (hard links; :func:`os.path.samefile`).

    Example:
        >>> same_file("data/x.npy", "data/../data/x.npy")
        True
    """
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an ``output`` that is one of the ``inputs`` (or the same file under another
    name): predictions never replace the data they come from.

    Example:
        >>> check_not_an_input("x.npy", ["x.npy"])
        Traceback (most recent call last):
        ...
        mlnnkit.errors.UserError: output x.npy is an input: writing it would replace the input's data; choose another -o
    """
    for src in inputs:
        if same_file(output, src):
            shown = f"{output}" if Path(output) == Path(src) else f"{output} (the same file as {src})"
            raise UserError(
                f"output {shown} is an input: writing it would replace the input's data; "
                "choose another -o"
            )


def plan_jobs(inputs: Sequence[str], output: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pair every input file (globs expanded, e.g. ``'scenes/*.nc'``) with its output.

    One input and an output that is not a directory: that file. Several inputs, or an
    output that is an existing directory or ends with ``/``: ``output/<input name>``.
    """
    files: list[Path] = []
    for item in inputs:
        item = str(item)
        if any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item))
            if not hits:
                raise UserError(f"no input file matches {item!r}")
            files += [Path(h) for h in hits if Path(h).is_file()]
        else:
            if Path(item).is_dir():
                raise UserError(
                    f"{item} is a folder, not an input file; for the files in it pass '{item}/*'"
                )
            files.append(Path(item))
    if not files:
        raise UserError("no input files given")
    out = str(output)
    to_dir = len(files) > 1 or out.endswith(("/", os.sep)) or Path(out).is_dir()
    if not to_dir:
        check_not_an_input(out, files)
        return [(files[0], Path(out))]
    outdir = Path(out)
    if not outdir.is_dir() and not out.endswith(("/", os.sep)) and outdir.suffix.lower() in KINDS:
        raise UserError(
            f"{len(files)} input files need an output folder, but -o {out} names a "
            f"{outdir.suffix} file: give a folder (e.g. -o {outdir.with_suffix('')}/), or one input"
        )
    pairs = [(f, outdir / f.name) for f in files]
    seen: dict[Path, Path] = {}
    for f, o in pairs:
        if o in seen:
            raise UserError(f"{f} and {seen[o]} would both write {o}; give them different names")
        if same_file(o, f):
            raise UserError(
                f"{f}: the output folder {outdir} is the input's own, so its output {o} "
                "would replace it; choose another -o"
            )
        check_not_an_input(o, files)
        seen[o] = f
    return pairs


def error_text(e: BaseException) -> str:
    """One line for a failed file: a user error's own message, else the exception's."""
    if isinstance(e, UserError):
        return " ".join(str(e).split())
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def predict_files(
    model,
    jobs: Sequence[tuple[Path, Path]],
    *,
    inputs=None,
    outputs=None,
    chunk_rows: int | None = None,
    block_rows: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_open: Callable[[Source], None] | None = None,
    on_done: Callable[[FileResult], None] | None = None,
    flags: bool = False,
    limit_margin: float = 0.02,
) -> list[FileResult]:
    """:func:`predict_file` for every ``(input, output)`` job in turn; a file that fails
    is reported in its :class:`FileResult` (``error``) and the others still run.
    ``on_done`` is called with each file's result as soon as it is finished; ``flags``
    and ``limit_margin`` as in :func:`predict_file`."""
    results = []
    for src, dst in jobs:
        try:
            r = predict_file(
                model, src, dst, inputs=inputs, outputs=outputs, chunk_rows=chunk_rows,
                block_rows=block_rows, workers=workers, progress=progress, on_open=on_open,
                flags=flags, limit_margin=limit_margin,
            )  # fmt: skip
        except (UserError, OSError, ValueError, RuntimeError) as e:
            r = FileResult(Path(src), Path(dst), 0, 0, 0.0, error=error_text(e))
        results.append(r)
        if on_done is not None:
            on_done(r)
    return results
