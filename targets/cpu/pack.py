"""Weight pre-packing: a constant matmul operand laid out in column panels at build time.

For ``C[i, j] += A[i, k] * W[k, j]`` with a constant ``W`` (a PrimFunc parameter that
Relax's ``AttachAttrLayoutFreeBuffers`` lists in ``layout_free_buffers``), the kernel
reads ``Wp[j // nb, k, j % nb]`` instead, where ``nb`` is the register tile's vector
width. A tile's inner loop then streams one contiguous ``K x nb`` panel instead of
``K`` rows ``N`` floats apart (6 KB apart on MiniLM's 384x1536 dense: a stride that
maps every row to the same few L1 sets).

The copy into the packed layout is a block annotated
``meta_schedule.layout_rewrite_preproc``; ``FoldPackedWeights`` (Relax's
``SplitLayoutRewritePreproc``, then ``FoldConstant``) moves it out of the kernel and
runs it once at build time (see ``pipeline.schedule_passes``). Without those passes the copy stays in the kernel:
slower, still correct.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir.dlight.analysis import IterInfo

PREPROC = "meta_schedule.layout_rewrite_preproc"


def layout_free_names(func: tirx.PrimFunc) -> set[str]:
    """Names of the parameters Relax marked as constants (``layout_free_buffers``)."""
    idx = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    if not idx:
        return set()
    return {func.params[int(i)].name for i in idx}


def pack_panels(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    constants: set[str],
    v: IterInfo,
    nb: int,
) -> bool:
    """Read the constant 2-D operand indexed by ``v`` from ``nb``-wide panels; True if done."""
    if nb < 2 or int(v.dom) % nb:
        return False
    stmt = sch.get(block)
    out = stmt.writes[0].source
    for idx, region in enumerate(stmt.reads):
        buf = region.source
        if buf.same_as(out) or buf.name not in constants or len(buf.shape) != 2:
            continue
        mins = [r.min for r in region.region]
        if not all(isinstance(m, tirx.Var) for m in mins):
            continue
        if mins[1].same_as(v.var):  # W[k, j]
            def index_map(a: tirx.Var, b: tirx.Var) -> tuple[tirx.Expr, ...]:
                return (b // nb, a, b % nb)
        elif mins[0].same_as(v.var):  # W[j, k] (transposed weight)
            def index_map(a: tirx.Var, b: tirx.Var) -> tuple[tirx.Expr, ...]:
                return (a // nb, b, a % nb)
        else:
            continue
        copy = sch.cache_read(block, idx, "global")
        sch.transform_layout(block, ("read", idx), index_map)
        sch.annotate(copy, PREPROC, True)
        return True
    return False


def has_packing(func: tirx.PrimFunc) -> bool:
    """True if a schedule left a packing copy (a ``PREPROC`` block) in ``func``."""
    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - TVM raises plain errors; hand-written TIR without blocks
        return False
    return any(PREPROC in sch.get(b).annotations for b in blocks)


@tvm.transform.module_pass(opt_level=0, name="edgec.FoldPackedWeights")
class FoldPackedWeights:
    """Move packing copies out of the kernels and run them at build time.

    Only kernels that were packed keep ``layout_free_buffers`` (nothing else
    needs the attribute).
    """

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        # TVM's split visits every PrimFunc and rejects some unpacked ones (a
        # scatter's hand-written loops): it sees only the packed kernels and the
        # Relax functions; the others are put back unchanged.
        others = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not has_packing(func):
                others[gv] = func.without_attr("layout_free_buffers") if func.attrs is not None \
                    and "layout_free_buffers" in func.attrs else func
        if len(others) == sum(isinstance(f, tirx.PrimFunc) for _, f in mod.functions_items()):
            return mod
        packed = tvm.IRModule(
            {gv: f for gv, f in mod.functions_items() if gv not in others}, attrs=mod.attrs
        )
        packed = relax.transform.SplitLayoutRewritePreproc()(packed)
        for gv, func in others.items():
            packed[gv] = func
        return relax.transform.FoldConstant()(packed)
