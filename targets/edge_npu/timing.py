"""Per-instruction cycle costs of edge-npu (the static cost model).

- GEMM fold: SCALE-Sim's stall-free figure for an R x C array. WS: 2R + C + T - 2
  (R to preload weights, R + C - 2 to skew in and drain, T streamed rows); OS:
  R + C + T - 2 with T the reduction length. A GEMM with ``chain`` keeps the array
  pipeline full (same weights in WS, same outputs in OS), so only T is paid: the fill
  and drain overlap the neighbour's streaming, which keeps a split fold equal to one.
- DMA: a fixed cost per descriptor plus bytes over the bandwidth of the side that
  limits it (host link, or the on-chip feed for parameter-cache moves), as in VTA's
  cost template; on chip at least one cycle per contiguous run (a row, or a pixel of
  a STORE with a ``pitch``), since a memory port serves one address per cycle.
- VEC: pipeline latency plus elements over lanes.
- SYNC: the per-layer launch cost.
"""

from __future__ import annotations

import math

from .config import NpuConfig
from .isa import Dataflow, Instr, Kind, Op, Space


def fold_cycles(cfg: NpuConfig, dataflow: Dataflow, t: int, chain: bool = False) -> int:
    """Stall-free cycles of one fold streaming ``t`` rows (WS) or reduction steps (OS)."""
    r, c = cfg.rows, cfg.cols
    fill = (2 * r + c - 2) if dataflow == Dataflow.WS else (r + c - 2)
    return t + (0 if chain else fill)


def dma_bytes(ins: Instr) -> int:
    """Bytes read from the DMA's source (padding is generated, not read)."""
    elem = 4 if ins.op == Op.LOAD and ins.kind in (Kind.BIAS, Kind.PARAM) else 1
    return ins.rows * ins.cols * ins.depth * elem


def dma_runs(ins: Instr) -> int:
    """Contiguous runs a DMA moves: one per row (one in all when the rows abut), or
    one per pixel when a STORE's pitch scatters them."""
    if ins.op == Op.STORE and ins.pitch not in (0, ins.depth):
        return ins.rows * ins.cols
    return 1 if ins.stride == ins.cols * ins.depth else ins.rows


def dma_cycles(cfg: NpuConfig, ins: Instr) -> int:
    if ins.space == Space.HOST:
        bw = cfg.host_bytes_per_cycle
    elif ins.op == Op.LOAD and ins.kind != Kind.ACT:
        bw = cfg.feed_weights
    else:
        bw = cfg.feed_activations
    return cfg.dma_descriptor_cycles + max(math.ceil(dma_bytes(ins) / bw), dma_runs(ins))


def xfer_cycles(cfg: NpuConfig, ins: Instr) -> int:
    """An XFER: a descriptor, then its bytes at the host link's bandwidth."""
    return cfg.dma_descriptor_cycles + math.ceil(ins.bytes / cfg.host_bytes_per_cycle)


def vec_cycles(cfg: NpuConfig, ins: Instr) -> int:
    """``count`` is elements, or window element-ops for pools (out elems * kh * kw)."""
    return cfg.vector_latency + math.ceil(ins.count / cfg.vector_lanes)


def gemm_cycles(cfg: NpuConfig, ins: Instr) -> int:
    df = Dataflow(ins.df)
    t = ins.m_len if df == Dataflow.WS else ins.k_len
    return fold_cycles(cfg, df, t, bool(ins.chain))
