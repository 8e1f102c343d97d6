"""LpNormalization, which TVM's importer lacks.

    LpNormalization(x, axis, p=1) -> x / sum(|x|, axis, keepdims)
    LpNormalization(x, axis, p=2) -> x / sqrt(sum(x * x, axis, keepdims))

As ONNX's reference, a zero norm divides by zero (NaN/inf), no epsilon.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

op = relax.op


class LpNormalization(OnnxOpConverter):
    """x divided by its L1 or L2 norm along one axis."""

    @classmethod
    def _impl_v1(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        x = inputs[0]
        axis, p = int(attr.get("axis", -1)), int(attr.get("p", 2))
        if p == 1:
            norm = op.sum(op.abs(x), axis=[axis], keepdims=True)
        elif p == 2:
            norm = op.sqrt(op.sum(op.multiply(x, x), axis=[axis], keepdims=True))
        else:
            raise ValueError(f"LpNormalization p={p}: ONNX defines only p=1 and p=2")
        return op.divide(x, norm)
