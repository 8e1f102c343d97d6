"""The padding pass in front of a conv or pool kernel (``pad[..., h, w] = in or 0``).

Padded rows are rarely a multiple of the vector (162 floats for a 160-wide map):
the injective default then falls back to 2-lane vectors, and LLVM turns those, with
the bounds check, into scalar code doing a division per element (a quarter of a
160x160 3x3 conv's time in PP-OCR det). Here the row is split into whole vectors
with a predicated last one, and everything above the row runs in parallel.
"""

from __future__ import annotations

from edgec.targets.cpu.common import const_extent, parallelize, vector_lanes
from tvm import s_tir
from tvm.target import Target


def schedule_padding(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, target: Target) -> None:
    """Vectorize a padding block along its row (tail predicated) and parallelize the rest."""
    loops = sch.get_loops(block)
    extents = [const_extent(sch, lp) for lp in loops]
    if not loops or any(e is None for e in extents):
        return
    total = 1
    for e in extents:
        total *= e  # type: ignore[operator]
    lanes = vector_lanes(target, sch.get(block).writes[0].source.dtype.bits)
    row = extents[-1]
    outer = loops[:-1]
    if row is not None and row > lanes:
        o, inner = sch.split(loops[-1], factors=[None, lanes])
        outer = [*outer, o]
        sch.vectorize(inner)
    elif row is not None and row > 1:
        sch.vectorize(loops[-1])
    parallelize(sch, outer, total)
