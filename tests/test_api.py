"""The public API: what ``mlnnkit.__all__`` promises is there, visible to ``dir()``, and
documented with an example (the examples themselves run as doctests of src/mlnnkit)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import mlnnkit


def test_all_names_resolve_and_dir_lists_them():
    for name in mlnnkit.__all__:
        assert getattr(mlnnkit, name) is not None, name
    listed = [n for n in dir(mlnnkit) if not n.startswith("_")]
    assert sorted(listed) == sorted(n for n in mlnnkit.__all__ if not n.startswith("_"))
    assert {"predict_array", "load_model", "io_names", "legacy", "layers", "float64"} <= set(
        mlnnkit.__all__
    )
    assert set(mlnnkit._LAZY) <= set(mlnnkit.__all__)  # each lazy name spelled out in __all__


def test_public_functions_have_docstring_examples():
    missing = []
    for name in mlnnkit.__all__:
        obj = getattr(mlnnkit, name)
        if inspect.ismodule(obj) or name.startswith("_") or isinstance(obj, type):
            continue
        if ">>>" not in (obj.__doc__ or ""):
            missing.append(name)
    for module_name in ("legacy", "retrieval", "export", "layers"):
        module = getattr(mlnnkit, module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isfunction(obj) and ">>>" not in (obj.__doc__ or ""):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public functions without an example: {missing}"


def test_import_mlnnkit_does_not_import_keras():
    # `mlnnkit --help` and `import mlnnkit` stay cheap: the public names load on first use.
    code = "import sys, mlnnkit; print('keras' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
