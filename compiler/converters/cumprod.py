"""CumProd (opset 26), which TVM's importer lacks, as a masked product reduction.

    CumProd(x, axis)[..., k] = prod_j where(M[k, j], x[..., j], 1)
    M[k, j] = j <= k  (exclusive: j < k; reverse: j >= k, exclusive reverse: j > k)

with ``axis`` moved last and back. This costs L*L per row (L the axis length) instead
of L, but it is a plain reduction: TVM's scan-form ``relax.op.cumprod`` does not get
through edgec's CPU schedules ("There should be a compute block ..."). ``axis`` must
be a constant (a graph input there is specialised on its value by the ONNX backend).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgec.converters._util import constant_value, dtype_of
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

op = relax.op
MAX_AXIS_LENGTH = 4096  # the L*L mask grows quadratically


class CumProd(OnnxOpConverter):
    """Cumulative product along a constant axis."""

    @classmethod
    def _impl_v26(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        x = inputs[0]
        axis_value = constant_value(inputs[1], params, "CumProd's axis").reshape(-1)
        if axis_value.size != 1:
            raise ValueError("CumProd's axis must hold one value")
        shape = [int(d) for d in x.ty.shape]
        rank = len(shape)
        axis = int(axis_value[0]) % rank
        length = shape[axis]
        if length > MAX_AXIS_LENGTH:
            raise ValueError(f"CumProd over {length} elements (edgec's limit: {MAX_AXIS_LENGTH})")
        k, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
        exclusive, reverse = int(attr.get("exclusive", 0)), int(attr.get("reverse", 0))
        mask = {(0, 0): j <= k, (1, 0): j < k, (0, 1): j >= k, (1, 1): j > k}[exclusive, reverse]
        order = [d for d in range(rank) if d != axis] + [axis]
        moved = op.permute_dims(x, order) if axis != rank - 1 else x
        rows = op.expand_dims(moved, [-2])  # [..., 1, L] against the [L, L] mask
        one = relax.const(1, dtype_of(x) or "float32")
        picked = op.where(relax.const(mask), rows, one)
        out = op.prod(picked, axis=[-1])
        if axis != rank - 1:
            back = [order.index(d) for d in range(rank)]
            out = op.permute_dims(out, back)
        return bb.normalize(out)
