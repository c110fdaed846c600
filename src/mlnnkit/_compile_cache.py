"""On-disk cache of the fast fit path's compiled XLA programs.

Compiling one epoch program takes about as long as training one or two epochs of the
seed's network; a tuning study or a repeated run compiles the same program again and
again. :func:`compile_cached` keeps each compiled program (serialized with
``jax.experimental.serialize_executable``) under a key made of the program's StableHLO
text, the JAX/jaxlib versions, the XLA flags and the host CPU, so a program is compiled
once per machine and loaded in a few milliseconds after that.

Where: ``$MLNNKIT_CACHE_DIR/xla`` (default ``~/.cache/mlnnkit/xla``, or
``$XDG_CACHE_HOME/mlnnkit/xla``). ``MLNNKIT_CACHE_DIR=off`` turns the cache off. The
cache keeps the :data:`MAX_ENTRIES` most recently used programs. Entries are pickles:
like JAX's own compilation cache, only point it at a folder you own.

Why not JAX's persistent compilation cache (``jax_compilation_cache_dir``): it works on
CPU, but it is process-wide configuration — its folder, the minimum compile time worth
caching (1 s by default, longer than these programs take), its size — and a library's fit
call should not change that under the program that called it. This cache holds only the
fast path's programs and puts the host CPU in the key (a home folder shared by machines
with different instruction sets must not hand one a program built for the other). A
user who turns JAX's cache on gets it as usual: ``lowered.compile()`` goes through it.

Example:
    >>> lowered = jax.jit(f).lower(*args)
    >>> compiled = compile_cached(lowered)          # compiles, or loads from the cache
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_ENTRIES = 256
_OFF = {"", "0", "off", "false", "no", "none"}


def cache_dir() -> Path | None:
    """The folder of cached programs, or ``None`` when the cache is off."""
    env = os.environ.get("MLNNKIT_CACHE_DIR")
    if env is not None:
        if env.strip().lower() in _OFF:
            return None
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "mlnnkit"
    return base / "xla"


def _host_id() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def cache_key(lowered: Any, compiler_options: dict | None = None) -> str:
    """A key that changes with the program, JAX, XLA flags, options and the host CPU."""
    import jax
    import jaxlib

    backend = jax.devices()[0].client
    h = hashlib.sha256()
    for part in (
        lowered.as_text(),
        jax.__version__,
        jaxlib.__version__,
        backend.platform,
        backend.platform_version,
        os.environ.get("XLA_FLAGS", ""),
        repr(sorted((compiler_options or {}).items())),
        _host_id(),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _compile(lowered: Any, compiler_options: dict | None) -> Any:
    if compiler_options:
        try:
            return lowered.compile(compiler_options)
        except Exception as e:  # noqa: BLE001 - an option this XLA does not have
            log.debug("compiling without options %s: %s", compiler_options, e)
    return lowered.compile()


def compile_cached(lowered: Any, compiler_options: dict | None = None) -> Any:
    """``lowered.compile()``, through the on-disk cache when it is on.

    Any problem with the cache (unwritable folder, a damaged or foreign entry, a program
    JAX cannot serialize) falls back to compiling; the cache never changes results.
    """
    folder = cache_dir()
    if folder is None:
        return _compile(lowered, compiler_options)
    from jax.experimental import serialize_executable as se

    try:
        key = cache_key(lowered, compiler_options)
    except Exception:  # noqa: BLE001 - no key, no cache
        return _compile(lowered, compiler_options)
    path = folder / f"{key}.pkl"
    if path.exists():
        try:
            with open(path, "rb") as f:
                payload, in_tree, out_tree = pickle.load(f)
            compiled = se.deserialize_and_load(payload, in_tree, out_tree)
            os.utime(path)  # most recently used
            return compiled
        except Exception:  # noqa: BLE001 - damaged or stale entry: drop it, compile
            path.unlink(missing_ok=True)
    compiled = _compile(lowered, compiler_options)
    try:
        blob = pickle.dumps(se.serialize(compiled), protocol=pickle.HIGHEST_PROTOCOL)
        folder.mkdir(parents=True, exist_ok=True)
        from mlnnkit._atomic import atomic_path

        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(blob)
        _prune(folder)
    except Exception as e:  # noqa: BLE001 - the cache is an optimisation only
        log.debug("could not store the compiled program in %s: %s", folder, e)
    return compiled


def _prune(folder: Path, keep: int = MAX_ENTRIES) -> None:
    entries = sorted(
        (p for p in folder.glob("*.pkl") if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old in entries[keep:]:
        old.unlink(missing_ok=True)
