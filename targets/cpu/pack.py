"""Weight pre-packing: a constant matmul operand laid out in column panels at build time.

For ``C[i, j] += A[i, k] * W[k, j]`` with a constant ``W`` (a PrimFunc parameter that
Relax's ``AttachAttrLayoutFreeBuffers`` lists in ``layout_free_buffers``), the kernel
reads ``Wp[j // nb, k, j % nb]`` instead, where ``nb`` is the register tile's vector
width. A tile's inner loop then streams one contiguous ``K x nb`` panel instead of
``K`` rows ``N`` floats apart (6 KB apart on MiniLM's 384x1536 dense: a stride that
maps every row to the same few L1 sets).

The copy into the packed layout is a block annotated
``meta_schedule.layout_rewrite_preproc``; Relax's ``SplitLayoutRewritePreproc`` moves
it out of the kernel and ``FoldConstant`` runs it once at build time (see
``pipeline.schedule_passes``). Without those passes the copy stays in the kernel:
slower, still correct.
"""

from __future__ import annotations

from tvm import s_tir, tirx
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
