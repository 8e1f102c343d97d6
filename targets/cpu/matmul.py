"""Matmul, dense and batch matmul: ``C[b, i, j] += A[b, i, k] * B[b, k, j]`` (+ epilogue).

Vector lanes run along ``j`` (contiguous in B and C); rows of ``i`` share each loaded
B vector, so the register tile is ``i_i x j_i`` (see ``tiling``). A constant B (a
dense layer's weight) is pre-packed into ``j_i``-wide panels at build time (``pack``).
"""

from __future__ import annotations

from edgec.targets.cpu.common import vector_lanes, vector_width
from edgec.targets.cpu.pack import layout_free_names, pack_panels
from edgec.targets.cpu.rule import CPURule
from edgec.targets.cpu.tiling import (
    index_is_plain,
    read_vars,
    reduction_kernel,
    register_axis,
    tile_reduction,
    vector_axis,
)
from tvm import s_tir, tirx
from tvm.target import Target


class Matmul(CPURule):
    """Two operands indexed by plain loop variables, reduced over a shared axis."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        found = reduction_kernel(func)
        if isinstance(found, str):
            return found
        sch, roles = found
        main = roles.main.block_rv
        if len(read_vars(sch, main)) != 2:
            return "not a two-operand reduction"
        if not index_is_plain(sch, main):
            return "operand index is not a plain variable (conv-like)"
        v = vector_axis(sch, roles)
        u = register_axis(sch, roles, v) if v is not None else None
        constants = layout_free_names(func)
        if v is not None and constants:
            # Panel width = the tile's vector width (the same choice tile_reduction makes).
            lanes = vector_lanes(target, sch.get(main).writes[0].source.dtype.bits)
            pack_panels(sch, main, constants, v, vector_width(int(v.dom), lanes))
        return tile_reduction(sch, roles, target, v, u)
