"""Matmul, dense and batch matmul: ``C[b, i, j] += A[b, i, k] * B[b, k, j]`` (+ epilogue).

Vector lanes run along ``j`` (contiguous in B and C); rows of ``i`` share each loaded
B vector, so the register tile is ``i_i x j_i`` (see ``tiling``).
"""

from __future__ import annotations

from edgec.targets.cpu.rule import CPURule
from edgec.targets.cpu.tiling import schedule_two_operand
from tvm import s_tir, tirx
from tvm.target import Target


class Matmul(CPURule):
    """Two operands indexed by plain loop variables, reduced over a shared axis."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        return schedule_two_operand(func, target, plain_indices=True)
