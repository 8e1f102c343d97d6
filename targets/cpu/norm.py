"""Softmax, layer norm, RMS norm: row reductions followed by elementwise work per row.

TVM's dlight CPU ``Reduction`` rule is written for exactly these (parallel rows, the
row's blocks computed together under the row loop, vectorized elementwise parts);
this rule runs it and reports why it declined.
"""

from __future__ import annotations

from edgec.targets.cpu.rule import CPURule
from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu import Reduction as _DlightReduction
from tvm.target import Target


class Norm(CPURule):
    """Kernels of several row-aligned reduction and elementwise blocks."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        result = _DlightReduction().apply(func, target, False)
        if result is None:
            return "not row reductions sharing leading spatial axes"
        return result if isinstance(result, s_tir.Schedule) else result[0]
