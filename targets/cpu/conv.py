"""Convolutions in NCHW / NCW: regular, depthwise (group = C), pointwise, strided.

``out[n, f, y, x] += pad[n, c, y*s + ry, x*s + rx] * w[f, c, ry, rx]``: vector lanes
along ``x`` (contiguous in the output and, for stride 1, in the input); the register
tile spans output channels ``f``, because the input vector does not depend on ``f``
and each load then feeds several FMAs. Depthwise convs have no such axis (the input
depends on ``f`` too) and tile rows ``y`` instead. Padding stays its own pass.
"""

from __future__ import annotations

from edgec.targets.cpu.rule import CPURule
from edgec.targets.cpu.tiling import schedule_two_operand
from tvm import s_tir, tirx
from tvm.target import Target


class Conv(CPURule):
    """Two-operand reductions whose input index mixes output and window axes."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        return schedule_two_operand(func, target, plain_indices=False)
