"""Register tiling for kernels built around one reduction (matmul, conv, pooling).

For ``C[s..., u, v] (+)= f(A, B)[..., r...]`` the schedule is

    parallel for (outer spatial, u_o, v_o):   # one output tile per iteration
        acc[u_i, v_i] = init                  # accumulator tile, held in registers
        for r...:                             # the whole reduction
            unroll for u_i: vector for v_i:   # u_i x (v_i / lanes) vector FMAs
                acc[u_i, v_i] (+)= ...
        C[...] = epilogue(acc)                # bias, activation, residual: fused here

``v`` is the output's contiguous axis (vector lanes); ``u`` is an axis along which
the vector-loaded operand is constant, so each loaded vector feeds ``u_i`` FMAs.
Tile sizes divide the extents, so no bounds checks reach the inner loops.
"""

from __future__ import annotations

from edgec.targets.cpu.common import (
    Roles,
    divisor_at_most,
    has_condition,
    num_vector_registers,
    parallelize,
    vars_in,
    vector_lanes,
    vector_width,
)
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import IterInfo
from tvm.target import Target

# Registers kept free of accumulators: the operands being broadcast and loaded.
_SPARE_REGISTERS = 4
_MAX_ROWS = 8
# Up to this many multiply-adds per output, the vector-loaded tile is a few KB and
# stays in L1 in any loop order; walking along the output rows then wins (PP-OCR
# det's 1x1 convs with 12-32 input channels on 160x160 and 320x320 maps: 1.2-1.8x
# faster, one thread; from 48 channels on, swapping wins or ties).
_SHORT_REDUCTION = 32


def read_vars(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[set[tirx.Var]]:
    """For each buffer the block reads (except its own output), the block vars it depends on."""
    stmt = sch.get(block)
    out = stmt.writes[0].source
    result = []
    for region in stmt.reads:
        if region.source.same_as(out):
            continue
        deps: set[tirx.Var] = set()
        for rng in region.region:
            deps |= vars_in(rng.min)
        result.append(deps)
    return result


def vector_axis(sch: s_tir.Schedule, roles: Roles) -> IterInfo | None:
    """The spatial iter indexing the output's innermost dimension (else the last one > 1)."""
    spatial = [it for it in roles.main.iters if it.kind == "S" and extent(it) > 1]
    if not spatial:
        return None
    last = sch.get(roles.main.block_rv).writes[0].region[-1].min
    inner = [it for it in spatial if any(v.same_as(it.var) for v in vars_in(last))]
    return inner[0] if inner else spatial[-1]


def register_axis(sch: s_tir.Schedule, roles: Roles, v: IterInfo) -> IterInfo | None:
    """A spatial iter the vector-loaded operands do not depend on (loads reused across it)."""
    spatial = [it for it in roles.main.iters if it.kind == "S" and extent(it) > 1 and it is not v]
    if not spatial:
        return None
    vec_loaded = [d for d in read_vars(sch, roles.main.block_rv) if uses(d, v.var)]
    reusing = [it for it in spatial if not any(uses(d, it.var) for d in vec_loaded)]
    return (reusing or spatial)[-1]


def tile_reduction(
    sch: s_tir.Schedule, roles: Roles, target: Target, v: IterInfo | None, u: IterInfo | None
) -> s_tir.Schedule:
    """Apply the register-tiled schedule above to ``roles.main`` (see module docstring)."""
    main = roles.main.block_rv
    dtype_bits = sch.get(main).writes[0].source.dtype.bits
    lanes = vector_lanes(target, dtype_bits)
    work = iteration_count(roles.main.iters)

    # Unguarded producers (identity "pads" of 1x1 convs, reshapes) read in place;
    # real padding stays a separate pass so no branch enters the vector loop.
    leftovers = []
    for p in reversed(roles.producers):
        if has_condition(sch, p.block_rv):
            # A guarded producer feeding another one (a transposed conv's dilate ->
            # pad) folds into it: one pass over the big buffer instead of two.
            if not _feeds_main(sch, p.block_rv, main) and _try_inline(sch, p.block_rv):
                continue
            leftovers.append(p.block_rv)
            continue
        try:
            sch.compute_inline(p.block_rv)
        except Exception:  # noqa: BLE001 - TVM raises plain errors; not inlinable (e.g. read twice with different indices)
            leftovers.append(p.block_rv)

    spatial = [it for it in roles.main.iters if it.kind == "S"]
    reduce = [it for it in roles.main.iters if it.kind == "R"]
    if [it.kind for it in roles.main.iters] != ["S"] * len(spatial) + ["R"] * len(reduce):
        sch.reorder(*[it.loop_rv for it in spatial + reduce])

    vi = vector_width(extent(v), lanes) if v is not None else 1
    rows_budget = (num_vector_registers(target) - _SPARE_REGISTERS) // max(1, -(-vi // lanes))
    ui = divisor_at_most(extent(u), min(_MAX_ROWS, max(1, rows_budget))) if u is not None else 1

    outer: list[s_tir.schedule.LoopRV] = []
    inner: list[s_tir.schedule.LoopRV] = []
    u_outer = None
    for it in spatial:
        if it is v or it is u:
            o, i = sch.split(it.loop_rv, factors=[None, vi if it is v else ui])
            outer.append(o)
            inner.append(i)
            u_outer = o if it is u else u_outer
        else:
            outer.append(it.loop_rv)
    depth = 1
    for it in reduce:
        depth *= extent(it)
    if (
        u_outer is not None
        and v is not None
        and depth > _SHORT_REDUCTION
        and _vector_operand_larger(sch, main, v)
    ):
        # Consecutive tiles then share the vector-loaded input tile (a conv's
        # input rows stay in L1 across output-channel blocks); the small operand
        # (weights) is what gets re-read.
        outer.remove(u_outer)
        outer.append(u_outer)
    # u_i before v_i: the vector axis is innermost.
    if u is not None and v is not None and spatial.index(u) > spatial.index(v):
        inner.reverse()
    sch.reorder(*outer, *[it.loop_rv for it in reduce], *inner)

    wb, tile_local = register_tile(sch, main, roles.consumers)
    sch.reverse_compute_at(wb, outer[-1], preserve_unit_loops=True)
    vectorize_last(sch, wb)
    if v is not None and vi > 1:
        sch.vectorize(inner[-1])
    if u is not None and ui > 1 and len(inner) == 2:
        sch.unroll(inner[0])
    fused = parallelize(sch, outer, work)
    # Last: loop annotations need the update to still be a reduction block.
    if reduce:
        init = sch.decompose_reduction(main, reduce[0].loop_rv)
        vectorize_last(sch, init)

    for c in tile_local:
        try:
            sch.reverse_compute_at(c, fused, preserve_unit_loops=True)
            vectorize_last(sch, c)
        except Exception:  # noqa: BLE001 - TVM raises plain errors; not tile-aligned (e.g. a transpose): its own loop nest
            leftovers.append(c)

    from edgec.targets.cpu.conv_pad import schedule_padding
    from edgec.targets.cpu.elementwise import schedule_injective_block

    for b in leftovers:
        if has_condition(sch, b):
            schedule_padding(sch, b, target)
        else:
            schedule_injective_block(sch, b, target)
    return sch


def _feeds_main(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, main: s_tir.schedule.SBlockRV
) -> bool:
    main_stmt = sch.get(main)
    return any(sch.get(c).same_as(main_stmt) for c in sch.get_consumers(block))


def _vector_operand_larger(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, v: IterInfo
) -> bool:
    """True if the operands indexed by the vector axis outweigh the others (bytes)."""
    stmt = sch.get(block)
    out = stmt.writes[0].source
    vec, other = 0, 0
    for region in stmt.reads:
        buf = region.source
        if buf.same_as(out):
            continue
        size = 1
        for d in buf.shape:
            size *= int(d)
        deps: set[tirx.Var] = set()
        for rng in region.region:
            deps |= vars_in(rng.min)
        if uses(deps, v.var):
            vec += size
        else:
            other += size
    return vec > other


def _try_inline(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    try:
        sch.compute_inline(block)
        return True
    except Exception:  # noqa: BLE001 - TVM raises plain errors; the block stays its own pass
        return False


def register_tile(
    sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV, consumers: list
) -> tuple[s_tir.schedule.SBlockRV, list[s_tir.schedule.SBlockRV]]:
    """Accumulate ``main`` into a register tile and fold its epilogue into the write-back.

    The epilogue chain is folded into its last block first (x*relu6(x+3)/6 reads x
    twice, so chain blocks are inlined forward), then that block into the write-back,
    which the caller attaches to its tile loop. Returns the write-back block and the
    epilogue blocks that would not fold (e.g. they read the output twice): those must
    run per tile after it.
    """
    wb = sch.cache_write(main, 0, "local")
    epilogue = []
    for c in consumers[:-1]:
        try:
            sch.compute_inline(c.block_rv)
        except Exception:  # noqa: BLE001 - TVM raises plain errors
            epilogue.append(c.block_rv)
    epilogue += [c.block_rv for c in consumers[-1:]]
    tile_local = []
    for c in epilogue:
        try:
            sch.reverse_compute_inline(c)
        except Exception:  # noqa: BLE001 - TVM raises plain errors
            tile_local.append(c)
    return wb, tile_local


def vectorize_last(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    loops = sch.get_loops(block)
    ext = sch.get(loops[-1]).extent
    if isinstance(ext, tirx.IntImm) and ext.value > 1:
        sch.vectorize(loops[-1])


def extent(it: IterInfo) -> int:
    d = it.dom
    return int(d.value) if isinstance(d, tirx.IntImm) else int(d)


def iteration_count(iters: list[IterInfo]) -> int:
    """Points in the iteration space (what ``parallelize`` weighs against thread start-up)."""
    n = 1
    for it in iters:
        n *= extent(it)
    return n


def uses(deps: set[tirx.Var], var: tirx.Var) -> bool:
    return any(d.same_as(var) for d in deps)


def reduction_kernel(func: tirx.PrimFunc) -> tuple[s_tir.Schedule, Roles] | str:
    """A fresh schedule of ``func`` and its roles, or why it is not a one-reduction kernel."""
    from edgec.targets.cpu.common import single_reduction
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return "not in normal form"
    roles = single_reduction(infos)
    if roles is None:
        return "not exactly one reduction block"
    if any(not isinstance(it.dom, (int, tirx.IntImm)) for it in roles.main.iters):
        return "dynamic extent"
    return sch, roles


def schedule_two_operand(
    func: tirx.PrimFunc, target: Target, *, plain_indices: bool
) -> s_tir.Schedule | str:
    """Register-tile a two-operand reduction: matmul-like (``plain_indices``) or conv-like."""
    found = reduction_kernel(func)
    if isinstance(found, str):
        return found
    sch, roles = found
    if len(read_vars(sch, roles.main.block_rv)) != 2:
        return "not a two-operand reduction"
    if index_is_plain(sch, roles.main.block_rv) != plain_indices:
        return ("operand index is not a plain variable (conv-like)" if plain_indices
                else "plain indices (matmul-like)")
    v = vector_axis(sch, roles)
    u = register_axis(sch, roles, v) if v is not None else None
    return tile_reduction(sch, roles, target, v, u)


def index_is_plain(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """True if every input index is a bare loop variable or constant (matmul, not conv)."""
    stmt = sch.get(block)
    for region in stmt.reads:
        for rng in region.region:
            if not isinstance(rng.min, (tirx.Var, tirx.IntImm)):
                return False
    return True
