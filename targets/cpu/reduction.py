"""Any other reduction (mean, sum, max over arbitrary axes), and mixed kernels.

Fallback: inline what can be inlined, then give every block at the root its own
loop nest with spatial axes outside reduction axes, fused and parallel; injective
blocks are also vectorized. Not fast, but never worse than the plain loops.
"""

from __future__ import annotations

from edgec.targets.cpu.common import const_extent, parallelize
from edgec.targets.cpu.elementwise import schedule_injective_block
from edgec.targets.cpu.rule import CPURule
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial
from tvm.target import Target


class Reduction(CPURule):
    """Parallel over output elements; the reduction itself stays sequential per element."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return "not in normal form"
        if all(b.is_injective() for b in infos):
            return "no reduction"
        for b in try_inline_contiguous_spatial(sch, infos):
            if b.is_injective():
                schedule_injective_block(sch, b.block_rv, target)
                continue
            spatial = [it.loop_rv for it in b.iters if it.kind == "S"]
            reduce = [it.loop_rv for it in b.iters if it.kind != "S"]
            extents = [const_extent(sch, it.loop_rv) for it in b.iters]
            if any(e is None for e in extents) or not spatial:
                continue
            sch.reorder(*spatial, *reduce)
            work = 1
            for e in extents:
                work *= e  # type: ignore[operator]
            parallelize(sch, spatial, work)
        return sch
