"""On-disk cache of the fast fit path's compiled XLA programs.

Compiling one epoch program takes about as long as training one or two epochs of the
seed's network; a tuning study or a repeated run compiles the same program again and
again. :func:`compile_cached` keeps each compiled program (serialized with
``jax.experimental.serialize_executable``) under a key made of the program's StableHLO
text, the JAX/jaxlib versions, the XLA flags and the host CPU, so a program is compiled
once per machine and loaded in a few milliseconds after that.

Where: ``$MLNNKIT_CACHE_DIR/xla`` (default ``~/.cache/mlnnkit/xla``, or
``$XDG_CACHE_HOME/mlnnkit/xla``). ``MLNNKIT_CACHE_DIR=off`` turns the cache off. The
cache keeps the :data:`MAX_ENTRIES` most recently used programs.

Entries are pickles, and loading a pickle runs code: anyone who can write the folder
could run code in the next training. So the folder is created ``0700`` and each entry
``0600``, and an entry is loaded only when both the folder and the entry are owned by the
current user and writable by nobody else. Otherwise the program is compiled instead (and
nothing is stored in an untrusted folder), and a one-line note on stderr says so, once per
folder per process.

Why not JAX's persistent compilation cache (``jax_compilation_cache_dir``): it works on
CPU, but it is process-wide configuration — its folder, the minimum compile time worth
caching (1 s by default, longer than these programs take), its size — and a library's fit
call should not change that under the program that called it. This cache holds only the
fast path's programs and puts the host CPU in the key (a home folder shared by machines
with different instruction sets must not hand one a program built for the other). A
user who turns JAX's cache on gets it as usual: ``lowered.compile()`` goes through it.

Example:
    >>> import jax, jax.numpy as jnp
    >>> lowered = jax.jit(lambda a: jnp.tanh(a) * 2).lower(jnp.ones(3))
    >>> compiled = compile_cached(lowered)          # compiles, or loads from the cache
    >>> [float(v) for v in compiled(jnp.zeros(3))]
    [0.0, 0.0, 0.0]
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


_noted: set[str] = set()


def _note_once(key: str, msg: str) -> None:
    if key not in _noted:
        _noted.add(key)
        from mlnnkit._atomic import notify

        notify(msg)


def _untrusted(st: os.stat_result) -> str | None:
    """Why a folder or file with this stat may not be trusted, or None."""
    import stat as stat_mod

    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None and st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not by you (uid {uid})"
    if st.st_mode & (stat_mod.S_IWGRP | stat_mod.S_IWOTH):
        return f"it is writable by group or others (mode {stat_mod.S_IMODE(st.st_mode):04o})"
    return None


def folder_problem(folder: Path) -> str | None:
    """Why the cache folder may not be used (None: it is safe, or does not exist yet).

    Example:
        >>> folder_problem(Path("/tmp"))  # world-writable  # doctest: +SKIP
        'it is writable by group or others (mode 1777)'
    """
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"it cannot be inspected ({e.strerror})"
    import stat as stat_mod

    if not stat_mod.S_ISDIR(st.st_mode):
        return "it is not a folder"
    return _untrusted(st)


def _load_entry(path: Path) -> tuple | None:
    """The unpickled entry, or None when there is none or it may not be trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:  # a symlink (O_NOFOLLOW) or unreadable: do not trust it
        _note_once(str(path), f"note: not loading the cached program {path}: it is not a plain "
                   "file you can read; compiling instead")
        return None
    with os.fdopen(fd, "rb") as f:
        why = _untrusted(os.fstat(f.fileno()))
        if why:
            _note_once(
                str(path.parent),
                f"note: not loading cached compiled programs from {path.parent}: an entry "
                f"({path.name}) {why.removeprefix('it ')}; compiling instead",
            )
            return None
        return pickle.load(f)


def _store(folder: Path, path: Path, blob: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    from mlnnkit._atomic import atomic_path

    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)


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
    why = folder_problem(folder)
    if why:
        _note_once(
            str(folder),
            f"note: not using the compiled-program cache {folder}: {why}; compiling instead "
            "(make it yours with mode 700, or set MLNNKIT_CACHE_DIR to a folder of your own)",
        )
        return _compile(lowered, compiler_options)
    path = folder / f"{key}.pkl"
    entry = None
    try:
        entry = _load_entry(path)
        if entry is not None:
            payload, in_tree, out_tree = entry
            compiled = se.deserialize_and_load(payload, in_tree, out_tree)
            os.utime(path)  # most recently used
            return compiled
    except Exception:  # noqa: BLE001 - damaged or stale entry: drop it, compile
        path.unlink(missing_ok=True)
    compiled = _compile(lowered, compiler_options)
    try:
        blob = pickle.dumps(se.serialize(compiled), protocol=pickle.HIGHEST_PROTOCOL)
        _store(folder, path, blob)
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
