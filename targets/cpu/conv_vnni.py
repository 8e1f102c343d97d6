"""uint8 x int8 convolutions on AVX512-VNNI, sixteen output pixels per instruction.

The kernels ``int8_unsigned.conv2d_u8s8`` emits: ``out[n, f, y, x] = sum xp[n, c4, y sh
+ ry, x + rx, ci] * w[f, c4, ry, rx, ci]`` with the input packed four channels to a
32-bit word (``xp[n, c/4, h, w, c%4]``). Sixteen consecutive output pixels read
sixteen consecutive words: one 64-byte load, multiplied by one broadcast word of
weights (four input channels of one output channel) in one ``vpdpbusd``:

    parallel for (n, y, x_o):          # unit axes dropped
        xp rows of the tile = pack(pad(x)) # the packing stage of the kernel, if it has one
        for f_o:
            for c4, ry, rx:
                unroll for f_i in ROWS: unroll for x_m in TILE_VECTORS:
                    acc[f_i, x_m] = vpdpbusd(acc[f_i, x_m], xp[n, c4, y sh + ry, x .. x + 15 + rx, 0:4],
                                             broadcast(w[f, c4, ry, rx, 0:4]))
            out tile = epilogue(acc)    # compensation, bias, requantization: fused here

Output channels are innermost among the tile loops, so the input rows of a tile are
packed once and stay in L1 while every block of output channels reads them. Integer
arithmetic throughout: bit-exact.
"""

from __future__ import annotations

from edgec.targets.cpu.common import divisor_at_most, parallelize
from edgec.targets.cpu.pack import layout_free_names
from edgec.targets.cpu.rule import CPURule
from edgec.targets.cpu.tiling import extent, iteration_count, vectorize_last
from edgec.targets.cpu.vnni import (
    GROUP,
    INTRIN_PIXELS,
    LANES,
    accumulate_with_epilogue,
    vnni_reduction,
)
from tvm import s_tir, tirx
from tvm.sym.pattern import detect_linear_equation
from tvm.target import Target

ROWS = 8
TILE_VECTORS = 2


class ConvVNNI(CPURule):
    """``conv2d_u8s8`` kernels: packed uint8 input, constant packed int8 weight."""

    def schedule(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | str:
        found = vnni_reduction(func, target)
        if isinstance(found, str):
            return found
        sch, roles = found
        main = roles.main.block_rv
        stmt = sch.get(main)
        out = stmt.writes[0].source
        if str(out.dtype) != "int32" or len(out.shape) != 4:
            return "not an int32 NCHW accumulator"
        others = [r for r in stmt.reads if not r.source.same_as(out)]
        reads = {str(r.source.dtype): r for r in others}
        if len(others) != 2 or set(reads) != {"uint8", "int8"}:
            return "operands are not uint8 x int8"
        x_read, w_read = reads["uint8"], reads["int8"]
        if len(x_read.source.shape) != 5 or len(w_read.source.shape) != 5:
            return "operands are not channel-packed"
        if w_read.source.name not in layout_free_names(func):
            return "weight is not a constant"
        spatial = [it for it in roles.main.iters if it.kind == "S"]
        reduce = [it for it in roles.main.iters if it.kind == "R"]
        # Unit axes have no iterators (a batch of 1, a 1x1 window, a flattened map).
        if len(spatial) < 2 or len(reduce) < 2 or extent(reduce[-1]) != GROUP:
            return "not an NCHW conv over packed channel groups"
        x_it = spatial[-1]
        f_it = next((it for it in spatial if it.var.same_as(w_read.region[0].min)), None)
        if f_it is None or f_it is x_it or not stmt.writes[0].region[-1].min.same_as(x_it.var):
            return "output channels or columns not found"
        rest = [it for it in spatial if it is not f_it and it is not x_it]
        if extent(x_it) % LANES:
            return f"output width is no multiple of {LANES}"
        # Sixteen pixels are one load only if the input column advances with x by 1.
        coef = detect_linear_equation(x_read.region[3].min, [x_it.var])
        if len(coef) != 2 or not isinstance(coef[0], tirx.IntImm) or int(coef[0]) != 1:
            return "horizontal stride is not 1"
        if len(roles.producers) > 1 or (
                roles.producers and not sch.get(roles.producers[0].block_rv).writes[0]
                .source.same_as(x_read.source)):
            return "producers other than the packing of the input"

        wb = accumulate_with_epilogue(sch, roles)

        fi = divisor_at_most(extent(f_it), ROWS)
        tv = divisor_at_most(extent(x_it) // LANES, TILE_VECTORS)
        fo, fi_loop = sch.split(f_it.loop_rv, factors=[None, fi])
        xo, xm, xi = sch.split(x_it.loop_rv, factors=[None, tv, LANES])
        *window, ri = (it.loop_rv for it in reduce)  # channel groups, ry, rx; channels
        outer = [*(it.loop_rv for it in rest), xo]
        sch.reorder(*outer, fo, *window, fi_loop, xm, xi, ri)
        sch.reverse_compute_at(wb, fo, preserve_unit_loops=True)
        vectorize_last(sch, wb)
        work = iteration_count(roles.main.iters)
        tile = parallelize(sch, outer, work)
        if roles.producers:  # before tensorize: compute_at needs the conv's block
            _pack_per_tile(sch, roles.producers[0].block_rv, tile)
        init = sch.decompose_reduction(main, window[0])
        vectorize_last(sch, init)
        sch.tensorize(xi, INTRIN_PIXELS)
        for loop in (fi_loop, xm):
            sch.unroll(loop)
        return sch


def _pack_per_tile(sch: s_tir.Schedule, pack: s_tir.schedule.SBlockRV,
                   tile: s_tir.schedule.LoopRV) -> None:
    """Compute the packed input rows of one tile of output pixels under ``tile``, once for
    all output channels; the four channels of a word are unrolled and the row loop is
    left to LLVM's vectorizer, which writes the interleaved words as vector shuffles."""
    sch.compute_at(pack, tile, preserve_unit_loops=True)
    channel = sch.get_loops(pack)[-1]
    sch.unroll(channel)
