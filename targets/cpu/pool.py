"""Pooling: max / average over a window of one input (``pool[n, c, y, x] = max(...)``).

Same register tiling as convolutions with one operand: lanes along ``x``, a few
rows of ``y`` per tile, windows reduced in registers; padding stays its own pass.
"""

from __future__ import annotations

from edgec.targets.cpu.rule import CPURule
from edgec.targets.cpu.tiling import (
    index_is_plain,
    read_vars,
    reduction_kernel,
    tile_reduction,
    vector_axis,
)
from tvm import s_tir, tirx
from tvm.target import Target


class Pool(CPURule):
    """A window reduction of a single input."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        found = reduction_kernel(func)
        if isinstance(found, str):
            return found
        sch, roles = found
        if len(read_vars(sch, roles.main.block_rv)) != 1:
            return "not a one-input reduction"
        if index_is_plain(sch, roles.main.block_rv):
            return "no window (a plain reduction)"
        v = vector_axis(sch, roles)
        spatial = [it for it in roles.main.iters if it.kind == "S" and it is not v]
        # Rows of the window overlap, so neighbouring output rows reuse loaded input.
        u = next((it for it in reversed(spatial) if int(it.dom) > 1), None)
        return tile_reduction(sch, roles, target, v, u)
