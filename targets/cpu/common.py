"""Helpers shared by the CPU schedule rules: vector width, tile factors, block roles."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo
from tvm.target import Target

# Below this many loop iterations a kernel runs on one core: waking the thread
# pool costs more than it saves.
PARALLEL_MIN_WORK = 1 << 18


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """SIMD lanes for ``dtype_bits`` elements (16 f32 on AVX-512, 8 on AVX2, 4 on NEON)."""
    from tvm.target.codegen import llvm_get_vector_width

    try:
        bits = int(llvm_get_vector_width(target))
    except Exception:  # noqa: BLE001 - TVM raises plain errors; non-LLVM or unknown CPU: assume 128-bit SIMD
        bits = 128
    return max(bits // dtype_bits, 2) if bits > 0 else 4


def num_vector_registers(target: Target) -> int:
    """Architectural SIMD registers: 32 on aarch64 and AVX-512, 16 on AVX2."""
    mtriple = str(target.attrs.get("mtriple", ""))
    if mtriple.startswith("aarch64") or vector_lanes(target) >= 16:
        return 32
    return 16


def divisor_at_most(extent: int, want: int) -> int:
    """Largest divisor of ``extent`` that is ``<= want`` (tiles then need no bounds checks)."""
    for f in range(min(extent, want), 0, -1):
        if extent % f == 0:
            return f
    return 1


def vector_width(extent: int, lanes: int, max_vectors: int = 2) -> int:
    """Elements per vectorized inner loop: whole vectors if they divide ``extent``.

    A width that is no multiple of the vector (20 floats on 16-lane AVX-512) makes
    LLVM split it into lane inserts and stack spills: 8x slower than a narrower
    power-of-two width on a 40-wide PP-OCR feature map, so a half or quarter
    vector that divides the extent wins. Extents below one vector stay whole.
    """
    for k in range(max_vectors, 0, -1):
        if extent % (k * lanes) == 0:
            return k * lanes
    if extent < lanes:
        return extent
    width = lanes // 2
    while width >= 2 and extent % width:
        width //= 2
    return max(width, 1)


def const_extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def vars_in(expr: tirx.Expr) -> set[tirx.Var]:
    """Variables an index expression depends on."""
    from tvm.tirx.analysis import undefined_vars

    return set(undefined_vars(expr))


def has_condition(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """True if the block's value is guarded (padding): inlining it would put a branch
    into the innermost vector loop."""
    # TVM 0.27's Python API has no TIR expression visitor; the printed body names
    # every conditional the block can hold.
    text = str(sch.get(block).body)
    return "if_then_else" in text or "Select" in text


@dataclass
class Roles:
    """A kernel split around its one reduction: producers, the reduction, consumers."""

    producers: list[SBlockInfo]
    main: SBlockInfo
    consumers: list[SBlockInfo]


def single_reduction(infos: list[SBlockInfo]) -> Roles | None:
    """The kernel's roles if it has exactly one reduction block and the rest injective."""
    reductions = [i for i, b in enumerate(infos) if b.is_reduction()]
    if len(reductions) != 1 or any(
        not b.is_injective() for j, b in enumerate(infos) if j != reductions[0]
    ):
        return None
    k = reductions[0]
    return Roles(infos[:k], infos[k], infos[k + 1 :])


def parallelize(
    sch: s_tir.Schedule, loops: list[s_tir.schedule.LoopRV], work: int
) -> s_tir.schedule.LoopRV | None:
    """Fuse ``loops`` (outermost, adjacent) and run them on all cores if ``work`` pays for it."""
    if not loops:
        return None
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if work >= PARALLEL_MIN_WORK:
        sch.parallel(fused)
    return fused


def vectorize_innermost(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Vectorize the innermost loop of ``block`` with a divisor of its extent."""
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = const_extent(sch, loops[-1])
    if ext is None or ext < 2:
        return
    f = vector_width(ext, lanes, 4)
    if f == ext:
        sch.vectorize(loops[-1])
        return
    if f >= 2:
        sch.vectorize(sch.split(loops[-1], factors=[None, f])[1])


def rewrite_relax_functions(mod: tvm.IRModule, rewriter: relax.PyExprMutator,
                            drop_dead: bool = False) -> tvm.IRModule:
    """``mod`` with every Relax function visited by ``rewriter`` (built on ``mod``).

    ``drop_dead``: when the rewriter fired (its ``fired`` count), also remove the bindings
    the rewrite left without readers (a pad the new kernel reads through).
    """
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    out = rewriter.builder_.get()
    if drop_dead and getattr(rewriter, "fired", 0):
        out = relax.transform.DeadCodeElimination()(out)
    return out
