"""edgec: compile trained ONNX models for edge hardware on Apache TVM Relax."""

from __future__ import annotations

__version__ = "0.1.0"

from edgec.errors import EdgecError  # noqa: E402

__all__ = ["EdgecError", "__version__"]
