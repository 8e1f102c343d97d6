"""OneHot with a float (or 1-element) ``depth`` input.

ONNX lets ``depth`` be any numeric type and a scalar or 1-element tensor; TVM's
converter hands its value straight to ``relax.op.one_hot``, which takes an int, so
``depth=10.0`` fails. ONNX converts it with truncation: ``depth = int(depth)``.
Float indices are cast to int64. Negative indices count from the end (``i + depth`` when ``i < 0``), as in TVM's.
"""

from __future__ import annotations

from typing import Any

from edgec.converters._util import constant_value, dtype_of
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OneHot as _TvmOneHot
from tvm.relax.frontend.onnx.onnx_frontend import _normalize_negative_indices


class OneHot(_TvmOneHot):
    """TVM's OneHot with ONNX's conversion of ``depth``."""

    @classmethod
    def _impl_v11(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        indices = inputs[0]
        depth_value = constant_value(inputs[1], params, "OneHot's depth").reshape(-1)
        values = constant_value(inputs[2], params, "OneHot's values").reshape(-1)
        if depth_value.size != 1 or values.size != 2:
            raise ValueError("OneHot needs one depth and two values (off, on)")
        depth = int(depth_value[0])
        off_value, on_value = (relax.prim_value(v.item()) for v in values)
        indices_dtype = dtype_of(indices) or "int64"
        if not indices_dtype.startswith(("int", "uint")):
            # ONNX casts non-integer indices to int64.
            indices, indices_dtype = bb.normalize(relax.op.astype(indices, "int64")), "int64"
        indices = _normalize_negative_indices(bb, indices, relax.const(depth, indices_dtype))
        # Relax takes a non-negative axis into the output (one rank more than indices).
        axis = int(attr.get("axis", -1)) % (len(indices.ty.shape) + 1)
        out = bb.normalize(relax.op.one_hot(indices, on_value, off_value, depth, axis))
        # The op's dtype follows the Python values; ONNX's follows the values tensor.
        if dtype_of(out) == values.dtype.name:
            return out
        return bb.normalize(relax.op.astype(out, values.dtype.name))
