"""One program for a chain of vector x matrix passes that stays on chip: squeeze-excite's
global pool and its two one-pixel 1x1 convs as one layer.

A global pool is the ones row times the activation (read in place as weights, as
``lower`` runs a lone ``gap``), and a 1x1 conv of one pixel is a vector times its
weights. Run as separate layers, each pass pays a launch, stores its few bytes and the
next loads them back. Here the input vector is loaded once, each pass requantizes into
the activation bank (then applies its LUT), and the next pass's GEMMs read that vector
where it lies: the vector unit's hazard check (``hazards``) orders them. Only the last
pass stores. Every pass is the same integer op as the lone layer (OS GEMMs over K in
chunks of ``MAX_RUN``, as ``programs.long_k_layer``), so the result is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from .config import NpuConfig
from .isa import Dataflow, Instr, Kind, Op, Space, VecOp, make
from .programs import MAX_RUN, Conv, ProgramError, align, flat_runs, n_tiles

Loc = tuple[Space, int]


@dataclass(frozen=True)
class Pass:
    """A vector of ``k`` int8 times the ``k`` x ``n`` int8 matrix at PCACHE ``wgt`` (row
    stride ``n``), requantized with the per-N-tile blocks at ``params``, then the LUT at
    ``lut``. ``streamed``: the matrix arrives in the staging area during the layer."""

    k: int
    n: int
    wgt: int
    params: int
    lut: int | None = None
    streamed: bool = False


def chain_program(cfg: NpuConfig, vec: Loc, passes: list[Pass], out: Loc,
                  stream: tuple[int, int, int] | None = None,
                  sync: bool = True) -> list[Instr]:
    """``out = pass_n(... pass_1(vec))``; ``vec`` holds ``passes[0].k`` bytes.
    ``stream``: (host address, PCACHE staging address, bytes) of the streamed passes'
    weights, loaded after the vector."""
    if not passes:
        raise ProgramError("a pass chain needs at least one pass")
    for a, b in pairwise(passes):
        if a.n != b.k:
            raise ProgramError(f"pass of {a.n} outputs feeds one of {b.k} inputs")
    if any(p.streamed for p in passes) and stream is None:
        raise ProgramError("streamed passes without a weight stream")
    if passes[0].streamed:  # its first CFG waits for the vector, not for the stream too
        raise ProgramError("the first pass's matrix cannot stream")
    # the bank holds the input vector, then each pass's output
    outs, pos = [], align(passes[0].k)
    for p in passes:
        outs.append(pos)
        pos = align(pos + p.n)
    if pos > cfg.activation_bank:
        raise ProgramError(f"a {passes[0].k}-element vector and its passes' outputs do not "
                           f"fit an activation bank ({cfg.activation_bank} B)")
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    runs = flat_runs(passes[0].k, MAX_RUN)
    prog += [make(Op.LOAD, ("push_next",) if i == len(runs) - 1 else (), kind=Kind.ACT,
                  space=vec[0], dram=vec[1] + off, sram=off, rows=rows, cols=1,
                  depth=depth, stride=depth) for i, (off, rows, depth) in enumerate(runs)]
    if stream is not None:
        host, stage, size = stream
        wruns = flat_runs(size, min(size, MAX_RUN))
        prog += [make(Op.LOAD, ("push_next",) if i == len(wruns) - 1 else (), kind=Kind.WGT,
                      space=Space.HOST, dram=host + off, sram=stage + off, rows=rows, cols=1,
                      depth=depth, stride=depth) for i, (off, rows, depth) in enumerate(wruns)]
    first_streamed = next((i for i, p in enumerate(passes) if p.streamed), None)
    half = cfg.accumulator_words // 2
    n_acc, src = 0, 0
    for i, p in enumerate(passes):
        last = i == len(passes) - 1
        fin: tuple[str, ...] = ("push_next",) if last else ()
        off_p = 0
        for t, (n0, nl) in enumerate(n_tiles(Conv(1, 1, p.k, p.n), cfg.cols)):
            acc0 = (n_acc % 2) * half  # the next tile's GEMMs need not wait for this VEC
            n_acc += 1
            for j, k0 in enumerate(range(0, p.k, MAX_RUN)):
                kl = min(MAX_RUN, p.k - k0)
                pop = t == j == 0 and (i == 0 or i == first_streamed)
                prog.append(make(Op.CFG, ("pop_prev",) if pop else (), inp=src + k0, in_w=1,
                                 cin=kl, kc=kl, c_base=0, kh=1, kw=1, stride=1, out_w=1,
                                 wgt_stride=p.n, acc_stride=nl))
                prog.append(make(Op.GEMM, df=Dataflow.OS, reset=int(j == 0), chain=int(j > 0),
                                 m0=0, m_len=1, k0=0, k_len=kl, n_len=nl,
                                 wgt=p.wgt + k0 * p.n + n0, acc=acc0))
            dst = outs[i] + n0
            prog.append(make(Op.VEC, () if p.lut is not None else fin, vop=VecOp.REQUANT,
                             src=acc0, dst=dst, count=nl, cols=nl, param=p.params + off_p))
            if p.lut is not None:
                prog.append(make(Op.VEC, fin, vop=VecOp.LUT, src=dst, dst=dst, count=nl,
                                 param=p.lut))
            if last:
                prog.append(make(Op.STORE, ("pop_prev",), space=out[0], dram=out[1] + n0,
                                 sram=dst, rows=1, cols=1, depth=nl, stride=p.n))
            off_p += 4 * (3 + 3 * nl)  # one requant block per N-tile (``pack_requant``)
        src = outs[i]
    return prog


__all__ = ["Pass", "chain_program"]
