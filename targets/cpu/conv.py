"""Convolutions in NCHW / NCW: regular, pointwise, strided (depthwise: ``conv_depthwise``).

``out[n, f, y, x] += pad[n, c, y*s + ry, x*s + rx] * w[f, c, ry, rx]``: vector lanes
along ``x`` (contiguous in the output and, for stride 1, in the input); the register
tile spans output channels ``f``, because the input vector does not depend on ``f``
and each load then feeds several FMAs. Padding stays its own pass.

When the input-channel reduction is long (PP-OCR det's 96 -> 24 3x3 convs at
160x160) the tile of ``tiling`` re-reads a whole input row band per ``f`` block from
L2: 96 channels x 3 rows x 34 floats do not fit L1 next to the weights. Here the
channels are blocked and all ``f`` blocks run inside each channel block:

    parallel for (y, x_o):
        acc[F, x_i] = 0                                   # all output channels
        for c_o: for f_o:                                 # the input block stays in L1
            for c_i, ry, rx: unroll f_i: vector x_i: acc[f_o, f_i, x_i] += ...
        out[...] = epilogue(acc)
"""

from __future__ import annotations

import logging

from edgec.targets.cpu.common import (
    Roles,
    divisor_at_most,
    has_condition,
    num_vector_registers,
    parallelize,
    vector_lanes,
    vector_width,
)
from edgec.targets.cpu.rule import CPURule
from edgec.targets.cpu.tiling import (
    extent,
    index_is_plain,
    iteration_count,
    read_vars,
    reduction_kernel,
    register_axis,
    register_tile,
    schedule_two_operand,
    vector_axis,
    vectorize_last,
)
from tvm import s_tir, tirx
from tvm.target import Target

log = logging.getLogger(__name__)

# Input channels per block: 16 channels x 3 rows x 34 floats (6.5 KB) plus their
# weights for 24 output channels (14 KB) fit a 32 KB L1. Measured on det's 160x160
# 3x3 conv (one thread, AVX-512): blocks of 16-32 channels and 12-row register tiles
# 12% faster than the unblocked tile.
_CHANNEL_BLOCK = 16
_MAX_ROWS = 12
_SPARE_REGISTERS = 4
# The accumulators of all output channels live in one tile buffer: keep it in L1.
_MAX_ACC_BYTES = 16 * 1024


class Conv(CPURule):
    """Two-operand reductions whose input index mixes output and window axes."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        found = reduction_kernel(func)
        if not isinstance(found, str):
            sch, roles = found
            if _blockable(sch, roles):
                try:
                    return _channel_blocked(sch, roles, target)
                except Exception as exc:  # noqa: BLE001 - TVM raises plain errors; the plain tile below still applies
                    log.debug("channel-blocked conv refused: %s", str(exc).splitlines()[0:1])
        return schedule_two_operand(func, target, plain_indices=False)


def _blockable(sch: s_tir.Schedule, roles: Roles) -> bool:
    """A regular conv: f reuses the input, a long channel reduction leads the window axes."""
    main = roles.main.block_rv
    if len(read_vars(sch, main)) != 2 or index_is_plain(sch, main):
        return False
    kinds = [it.kind for it in roles.main.iters]
    spatial = [it for it in roles.main.iters if it.kind == "S"]
    reduce = [it for it in roles.main.iters if it.kind == "R"]
    if kinds != ["S"] * len(spatial) + ["R"] * len(reduce) or len(reduce) < 2:
        return False
    v = vector_axis(sch, roles)
    u = register_axis(sch, roles, v) if v is not None else None
    if v is None or u is None:
        return False
    inp = [d for d in read_vars(sch, main) if any(x.same_as(v.var) for x in d)]
    if len(inp) != 1 or any(x.same_as(u.var) for x in inp[0]):
        return False  # depthwise-like: f indexes the input too
    if extent(reduce[0]) < 2 * _CHANNEL_BLOCK:
        return False
    lanes_bytes = 64  # the widest vector (AVX-512): the narrowest tile _channel_blocked takes
    return extent(u) * lanes_bytes <= _MAX_ACC_BYTES


def _channel_blocked(sch: s_tir.Schedule, roles: Roles, target: Target) -> s_tir.Schedule:
    main = roles.main.block_rv
    v = vector_axis(sch, roles)
    u = register_axis(sch, roles, v)
    assert v is not None and u is not None  # checked by _blockable
    spatial = [it for it in roles.main.iters if it.kind == "S"]
    reduce = [it for it in roles.main.iters if it.kind == "R"]
    bits = sch.get(main).writes[0].source.dtype.bits
    lanes = vector_lanes(target, bits)
    vi = vector_width(extent(v), lanes)
    # Accumulators for every output channel at vi columns: narrow vi until they fit L1.
    while vi > lanes and extent(u) * vi * bits // 8 > _MAX_ACC_BYTES and extent(v) % (vi // 2) == 0:
        vi //= 2
    budget = (num_vector_registers(target) - _SPARE_REGISTERS) // max(1, -(-vi // lanes))
    ui = divisor_at_most(extent(u), min(_MAX_ROWS, max(1, budget)))
    cb = divisor_at_most(extent(reduce[0]), _CHANNEL_BLOCK)

    for p in roles.producers:
        if not has_condition(sch, p.block_rv):
            sch.compute_inline(p.block_rv)  # identity producers (reshapes) read in place

    others = [it.loop_rv for it in spatial if it is not v and it is not u]
    f_o, f_i = sch.split(u.loop_rv, factors=[None, ui])
    x_o, x_i = sch.split(v.loop_rv, factors=[None, vi])
    c_o, c_i = sch.split(reduce[0].loop_rv, factors=[None, cb])
    sch.reorder(*others, x_o, c_o, f_o, c_i, *[r.loop_rv for r in reduce[1:]], f_i, x_i)

    wb, tile_late = register_tile(sch, main, roles.consumers)
    sch.reverse_compute_at(wb, x_o, preserve_unit_loops=True)
    vectorize_last(sch, wb)
    for c in tile_late:
        sch.reverse_compute_at(c, x_o, preserve_unit_loops=True)
        vectorize_last(sch, c)

    sch.vectorize(x_i)
    if ui > 1:
        sch.unroll(f_i)
    work = iteration_count(roles.main.iters)
    parallelize(sch, [*others, x_o], work)
    init = sch.decompose_reduction(main, c_o)
    vectorize_last(sch, init)

    from edgec.targets.cpu.conv_pad import schedule_padding

    for p in roles.producers:
        if has_condition(sch, p.block_rv):
            schedule_padding(sch, p.block_rv, target)
    return sch
