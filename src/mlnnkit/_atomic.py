"""Write outputs under a temporary name and rename them when complete.

A crash (or Ctrl-C, or ``kill``) in the middle of writing never leaves a half-written
model, report or prediction file behind: either the old file, or nothing, or the new
complete file is there.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def _tmp_name(path: Path) -> Path:
    # Keep the full suffix (".keras", ".weights.h5", ".nc"): writers pick the format from it.
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    Example:
        >>> with atomic_path("run/model.keras") as tmp:  # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    import json

    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
