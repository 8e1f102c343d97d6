"""Pow with integer or mixed base/exponent types (ONNX allows them, Relax does not).

ONNX Pow (opset 12+) takes e.g. a float32 base and an int64 exponent; the result has
the base's type. TVM's converter hands both to ``relax.op.power``, which refuses mixed
dtypes and integer powers. Here the exponent is cast to a float base's type; an integer base is raised in
float64 and cast back (exact for the integer ranges ONNX tests use):

    Pow(x: f32, y: i64) -> power(x, astype(y, f32))
    Pow(x: i32, y: f32 or i32) -> astype(power(astype(x, f64), astype(y, f64)), i32)
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import Pow as _TvmPow


class Pow(_TvmPow):
    """TVM's Pow, plus mixed base/exponent dtypes."""

    @classmethod
    def _impl_v7(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        x, y = inputs
        xd, yd = _dtype(x), _dtype(y)
        if xd is None or yd is None or (xd == yd and xd.startswith("float")):
            return super()._impl_v7(bb, inputs, attr, params)
        if xd.startswith("float"):
            return relax.op.power(x, relax.op.astype(y, xd))
        wide = relax.op.power(relax.op.astype(x, "float64"), relax.op.astype(y, "float64"))
        return relax.op.astype(wide, xd)


def _dtype(expr: Any) -> str | None:
    """An expression's tensor dtype (TVM 0.27 names the type ``ty``), or None."""
    for field in ("ty", "struct_info"):
        dtype = getattr(getattr(expr, field, None), "dtype", None)
        if dtype:
            return str(dtype)
    return None
