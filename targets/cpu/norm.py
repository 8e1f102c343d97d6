"""Softmax, layer norm, RMS norm: row reductions followed by elementwise work per row.

The schedule is TVM's dlight CPU ``Reduction`` (parallel rows, every block of a row
computed under the row loop, elementwise parts vectorized) with one change: each
row reduction is split into ``lanes`` partial results first (``rfactor``),

    acc[l] (+)= x[k_o * lanes + l]   # vectorized: one vector op per k_o
    out     = acc[0] (+) ... (+) acc[lanes-1]

(several trailing reduction axes, as in a global average pool, are fused first)

so it runs as vector adds / max instead of a serial chain of scalar adds, each
waiting on the previous one (dlight leaves the reduction serial because rfactor
must come before ``compute_at``, which is the order used here). The summation
order changes: results differ from the serial loop by float rounding only.
Kernels where this does not apply get dlight's schedule unchanged.
"""

from __future__ import annotations

from edgec.targets.cpu.common import PARALLEL_MIN_WORK, const_extent, vector_lanes, vector_width
from edgec.targets.cpu.rule import CPURule
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.cpu import Reduction as _DlightReduction
from tvm.target import Target


class Norm(CPURule):
    """Kernels of several row-aligned reduction and elementwise blocks."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        try:
            sch = _vector_reductions(func, target)
        except Exception:  # noqa: BLE001 - TVM raises plain errors; dlight's schedule below still applies
            sch = None
        if sch is not None:
            return sch
        result = _DlightReduction().apply(func, target, False)
        if result is None:
            return "not row reductions sharing leading spatial axes"
        return result if isinstance(result, s_tir.Schedule) else result[0]


def _leading_spatial(info: SBlockInfo) -> int:
    kinds = info.dom_kind()
    return len(kinds) - len(kinds.lstrip("S"))


def _vector_reductions(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """dlight's row schedule with rfactor-vectorized reductions, or None if not applicable."""
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None or len(infos) < 2 or not infos[-1].is_injective():
        return None
    reductions = [b for b in infos if not b.is_injective()]
    if not reductions or any(not b.dom_kind().startswith("S") for b in infos):
        return None
    rows = min(_leading_spatial(b) for b in infos)
    lanes = vector_lanes(target, sch.get(infos[-1].block_rv).writes[0].source.dtype.bits)

    # rfactor before compute_at (see module docstring). Trailing reduction axes
    # (a global pool's H and W) are fused into one; its extent must be a multiple
    # of the width (a whole vector, else a half or quarter one).
    rfactored = []
    for b in reductions:
        kinds = b.dom_kind()
        n_red = len(kinds) - len(kinds.rstrip("R"))
        if kinds != "S" * (len(kinds) - n_red) + "R" * n_red:
            return None
        loops = sch.get_loops(b.block_rv)
        red = sch.fuse(*loops[-n_red:]) if n_red > 1 else loops[-1]
        ext = const_extent(sch, red)
        width = vector_width(ext, lanes, 1) if ext is not None else 0
        if ext is None or width < 4 or ext % width or ext < 2 * width:
            return None
        _, inner = sch.split(red, factors=[None, width])
        out_rank = len(sch.get(b.block_rv).writes[0].source.shape)
        rfactored.append(sch.rfactor(inner, factor_axis=out_rank))

    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    last = blocks[-1]
    loops = sch.get_loops(last)
    row = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
    work = 1
    for lp in sch.get_loops(infos[0].block_rv):
        work *= const_extent(sch, lp) or 1
    if work >= PARALLEL_MIN_WORK:  # a global pool's few thousand adds: one core
        sch.parallel(row)
    _DlightReduction._vectorize_inner(sch, last, lanes)
    for b in reversed(blocks[:-1]):
        sch.compute_at(b, row, preserve_unit_loops=True)

    rf_stmts = [sch.get(rf) for rf in rfactored]
    for b in blocks[:-1]:
        stmt = sch.get(b)
        if any(stmt.same_as(s) for s in rf_stmts):
            # compute_at regenerates loops in iter order (lane, ..., k_o): put k_o
            # outside and vectorize the lane loop, then hoist the init (vectorize
            # needs the update to still be a reduction block).
            inner = sch.get_loops(b)[1:]
            sch.reorder(inner[-1], inner[0])
            sch.vectorize(sch.get_loops(b)[-1])
            init = sch.decompose_reduction(b, sch.get_loops(b)[1])
            sch.vectorize(sch.get_loops(init)[-1])
        elif stmt.init is None:
            _DlightReduction._vectorize_inner(sch, b, lanes)
        # The final combine of ``lanes`` partial results stays a short serial loop.
    return sch
