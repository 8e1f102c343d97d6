"""Depthwise convolutions (group = C) in NCHW / NCW, any window and stride.

``out[n, c, y, x] += pad[n, c, y*s + ry, x*s + rx] * w[c, ry, rx]``: every output
axis indexes the input, so no axis reuses a loaded input vector (the register tile
of ``tiling`` has nothing to span) and the kernel is bound by moving the input, not
by FMAs. The schedule therefore works on bands of rows:

    parallel for (n, c, y_o):                       # a band of ``rows`` output rows
        pad_band = pad(input rows of the band)      # padding into a small L1 buffer
        for x_o:                                    # vector tiles along the row
            acc[rows, lanes] = 0
            unroll ry, rx, y_i: vector x_i: acc += pad_band[...] * w[c, ry, rx]
            out[...] = epilogue(acc)

Computing the padded band where it is used (instead of a pass over the whole padded
tensor) keeps the input's round trip to memory at one read. With stride ``s > 1``
the band is stored deinterleaved, column ``x`` at ``[x % s, x // s]``, so each tap
reads its ``x*s + rx`` columns as one contiguous vector instead of a strided gather
(when ``s`` divides the padded width; otherwise the gather stays).
"""

from __future__ import annotations

from edgec.targets.cpu.common import (
    Roles,
    divisor_at_most,
    has_condition,
    parallelize,
    vars_in,
    vector_lanes,
    vector_width,
)
from edgec.targets.cpu.rule import CPURule
from edgec.targets.cpu.tiling import (
    extent,
    iteration_count,
    read_vars,
    reduction_kernel,
    register_tile,
    uses,
    vector_axis,
    vectorize_last,
)
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import IterInfo
from tvm.sym.pattern import detect_linear_equation
from tvm.target import Target

# Output rows per band: measured 4-6 best on the PP-OCR det layers (AVX-512, 1 thread);
# more rows spill the accumulators, fewer re-pad more halo rows.
_ROWS = 5
_MAX_UNROLLED_TAPS = 7


class ConvDepthwise(CPURule):
    """Two-operand window reductions where the input depends on every output axis."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        found = reduction_kernel(func)
        if isinstance(found, str):
            return found
        sch, roles = found
        main = roles.main.block_rv
        deps = read_vars(sch, main)
        if len(deps) != 2:
            return "not a two-operand reduction"
        v = vector_axis(sch, roles)
        if v is None:
            return "no vector axis"
        spatial = [it for it in roles.main.iters if it.kind == "S"]
        reduce = [it for it in roles.main.iters if it.kind == "R"]
        inp = [d for d in deps if uses(d, v.var)]
        if len(inp) != 1 or not reduce:
            return "not a conv"
        if any(not uses(inp[0], it.var) for it in spatial if extent(it) > 1):
            return "an output axis reuses the input (regular conv)"
        if [it.kind for it in roles.main.iters] != ["S"] * len(spatial) + ["R"] * len(reduce):
            return "reduction axes are not innermost"
        pads = [p for p in roles.producers if has_condition(sch, p.block_rv)]
        if len(pads) > 1:
            return "more than one padding producer"
        for p in roles.producers:
            if p not in pads:
                sch.compute_inline(p.block_rv)  # an identity "pad" (no padding): read in place
        roles.producers = pads
        stride = _stride(sch, main, v)
        return _schedule(sch, roles, target, v, spatial, reduce, stride)


def _schedule(
    sch: s_tir.Schedule,
    roles: Roles,
    target: Target,
    v: IterInfo,
    spatial: list[IterInfo],
    reduce: list[IterInfo],
    stride: int,
) -> s_tir.Schedule:
    main = roles.main.block_rv
    lanes = vector_lanes(target, sch.get(main).writes[0].source.dtype.bits)
    vi = vector_width(extent(v), lanes)
    row = _row_axis(sch, main, spatial, v)
    rows = divisor_at_most(extent(row), _ROWS) if row is not None else 1

    outer = [it.loop_rv for it in spatial if it is not v and it is not row]
    inner = []
    if row is not None:
        y_o, y_i = sch.split(row.loop_rv, factors=[None, rows])
        outer.append(y_o)
        inner.append(y_i)
    x_o, x_i = sch.split(v.loop_rv, factors=[None, vi])
    inner.append(x_i)
    sch.reorder(*outer, x_o, *[r.loop_rv for r in reduce], *inner)

    wb, tile_late = register_tile(sch, main, roles.consumers)
    sch.reverse_compute_at(wb, x_o, preserve_unit_loops=True)
    vectorize_last(sch, wb)
    for c in tile_late:
        sch.reverse_compute_at(c, x_o, preserve_unit_loops=True)
        vectorize_last(sch, c)

    if vi > 1:
        sch.vectorize(x_i)
    if rows > 1:
        sch.unroll(inner[0])
    for r in reduce:
        if extent(r) <= _MAX_UNROLLED_TAPS:
            sch.unroll(r.loop_rv)  # the window taps
    work = iteration_count(roles.main.iters)
    band = parallelize(sch, outer, work)
    init = sch.decompose_reduction(main, reduce[0].loop_rv)
    vectorize_last(sch, init)

    for p in roles.producers:
        # The padded band is computed per band; TVM then allocates it per iteration.
        sch.compute_at(p.block_rv, band, preserve_unit_loops=True)
        width = sch.get(p.block_rv).writes[0].source.shape[-1]
        if stride > 1 and int(width) % stride == 0:
            sch.transform_layout(
                p.block_rv, ("write", 0), lambda *i: (*i[:-1], i[-1] % stride, i[-1] // stride)
            )
        loops = sch.get_loops(p.block_rv)
        ext = sch.get(loops[-1]).extent
        if isinstance(ext, tirx.IntImm) and ext.value > lanes:
            # The row is rarely a multiple of the vector: the last vector is predicated.
            sch.vectorize(sch.split(loops[-1], factors=[None, lanes])[1])
    return sch


def _row_axis(
    sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV, spatial: list[IterInfo], v: IterInfo
) -> IterInfo | None:
    """The spatial iter indexing the output's second-to-last dimension (rows), if any."""
    region = sch.get(main).writes[0].region
    if len(region) < 2:
        return None
    used = vars_in(region[-2].min)
    rows = [it for it in spatial if it is not v and uses(used, it.var) and extent(it) > 1]
    return rows[0] if rows else None


def _stride(sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV, v: IterInfo) -> int:
    """The input's step along its last axis per step of ``v`` (the conv's x stride)."""
    stmt = sch.get(main)
    for region in stmt.reads:
        last = region.region[-1].min
        if uses(vars_in(last), v.var) and not region.source.same_as(stmt.writes[0].source):
            coef = detect_linear_equation(last, [v.var])
            if len(coef) == 2 and isinstance(coef[0], tirx.IntImm):
                return max(1, int(coef[0].value))
    return 1
