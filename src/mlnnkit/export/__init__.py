"""Export a Keras model to formats other programs run: ONNX (MATLAB, Java/SNAP, C++).

- :func:`to_onnx`: write a model (imported, fine-tuned, built) as an ``.onnx`` file with
  one input ``inputs`` (rows x variables), named outputs and the variable names, ranges,
  transforms and provenance in its ``metadata_props``; the written file is checked with
  onnxruntime against the model and, for an imported network, against the float64
  reference of its legacy file, and nothing is left behind if that fails.
- :func:`read_onnx_metadata`: the metadata mlnnkit wrote into an ``.onnx`` file.

Needs the ``onnx`` extra: ``pip install "mlnnkit[onnx]"`` (jax2onnx, onnx, onnxruntime).

Example:
    >>> from mlnnkit.export import to_onnx
    >>> result = to_onnx("net.keras", "net.onnx")
    >>> result.passed
    True
"""

from __future__ import annotations

from mlnnkit.export._onnx import (
    ONNX_EXTRA_HINT,
    OnnxCheck,
    OnnxExport,
    OnnxVerificationError,
    onnx_available,
    read_onnx_metadata,
    require_onnx,
    to_onnx,
)

__all__ = [
    "ONNX_EXTRA_HINT",
    "OnnxCheck",
    "OnnxExport",
    "OnnxVerificationError",
    "onnx_available",
    "read_onnx_metadata",
    "require_onnx",
    "to_onnx",
]
