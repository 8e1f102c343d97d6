"""Race checking for simulated programs: happens-before with vector clocks.

The functional simulator applies each instruction when it starts, so a program whose
queues touch the same bytes without a dependence token between them still computes
*something*: the order the timing model happened to pick. On hardware that order is
not promised. This checker refuses such programs. It follows FastTrack (Flanagan and
Freund, PLDI 2009), with the agents being the load queue, the array (CFG / GEMM), the
vector unit, the store queue and the host queue (XFER):

- an agent's instructions are ordered among themselves (in-order queues);
- a pushed token carries its pusher's clock; popping it joins that clock. Compute
  queue tokens also carry the vector unit's clock, because they are pushed only once
  every VEC before them has finished;
- a VEC starts after the array's earlier work (it is dispatched in order), and a GEMM
  that waited for a VEC on a hazard (``hazards``) is ordered after it;
- SYNC orders everything.

Memories checked: the activation banks (bytes), the accumulators (words), and the
activation bytes that STOREs write and activation LOADs read in the parameter cache and
host buffers (a cascade's layers read what the one before stores without a SYNC between
them). A DMA's range there is its hull, first to last byte: the bytes between its rows
or pixels belong to the same tensor's other tiles. Each access of a range is checked against the last
write of every byte (and a write against every agent's last read): if that access is
not ordered before this one, the program has a race and ``RaceError`` names both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import hazards
from .isa import POOL_KEYS, Instr, Kind, Op, Space, VecOp
from .semantics import SimError

AGENTS = ("load", "compute", "vector", "store", "host")
_IDX = {a: i for i, a in enumerate(AGENTS)}
_SPACE = {Space.PCACHE: "pcache", Space.HOST: "host"}


class RaceError(SimError):
    """Two instructions touch the same bytes with nothing ordering them."""


class _Shadow:
    """Per element: last writer (agent + 1, 0 for none; clock; instruction) and each
    agent's last read (clock, 0 for none; instruction). All zero-initialised, so only
    the pages a program touches cost anything."""

    def __init__(self, size: int) -> None:
        self.w_agent = np.zeros(size, dtype=np.int8)
        self.w_clock = np.zeros(size, dtype=np.int32)
        self.w_instr = np.zeros(size, dtype=np.int32)
        self.r_clock = np.zeros((len(AGENTS), size), dtype=np.int32)
        self.r_instr = np.zeros((len(AGENTS), size), dtype=np.int32)


class RaceChecker:
    """Vector clocks of the five agents and shadow state of INP, ACC, PCACHE and host."""

    def __init__(self, inp_bytes: int, acc_words: int, pcache_bytes: int = 0,
                 host_bytes: int = 0) -> None:
        self.vc = {a: np.zeros(len(AGENTS), dtype=np.int64) for a in AGENTS}
        for a in AGENTS:
            self.vc[a][_IDX[a]] = 1
        self.mem = {"inp": _Shadow(inp_bytes), "acc": _Shadow(acc_words),
                    "pcache": _Shadow(pcache_bytes), "host": _Shadow(host_bytes)}

    # -- ordering ------------------------------------------------------------------------
    def clock(self, agent: str) -> np.ndarray:
        return self.vc[agent].copy()

    def join(self, agent: str, other: np.ndarray) -> None:
        np.maximum(self.vc[agent], other, out=self.vc[agent])

    def sync(self) -> None:
        """Everything so far is ordered before what follows; each agent starts a new epoch
        (one the others have not seen)."""
        top = np.max(np.stack(list(self.vc.values())), axis=0)
        for a in AGENTS:
            self.vc[a] = top.copy()
            self.vc[a][_IDX[a]] += 1

    def step(self, agent: str) -> None:
        """Before an instruction: it gets an epoch no other agent has seen yet."""
        self.vc[agent][_IDX[agent]] += 1

    # -- accesses ------------------------------------------------------------------------
    def access(self, agent: str, mem: str, lo: int, hi: int, write: bool, idx: int,
               where: str) -> None:
        sh = self.mem[mem]
        hi = min(hi, sh.w_agent.size)
        if hi <= lo:
            return
        vc, me = self.vc[agent], _IDX[agent]
        wa = sh.w_agent[lo:hi].astype(np.intp) - 1
        known = wa >= 0
        bad = known & (vc[np.where(known, wa, 0)] < sh.w_clock[lo:hi])
        if bad.any():
            self._report(where, mem, lo, bad, sh.w_instr[lo:hi], AGENTS[int(wa[bad.argmax()])],
                         "wrote")
        if write:
            for b, other in enumerate(AGENTS):
                if b == me:
                    continue
                late = sh.r_clock[b, lo:hi] > vc[b]
                if late.any():
                    self._report(where, mem, lo, late, sh.r_instr[b, lo:hi], other, "read")
            sh.w_agent[lo:hi] = me + 1
            sh.w_clock[lo:hi] = vc[me]
            sh.w_instr[lo:hi] = idx
            sh.r_clock[:, lo:hi] = 0
        else:
            sh.r_clock[me, lo:hi] = vc[me]
            sh.r_instr[me, lo:hi] = idx

    @staticmethod
    def _report(where: str, mem: str, lo: int, bad: np.ndarray, instr: np.ndarray,
                other: str, how: str) -> None:
        first = int(bad.argmax())
        raise RaceError(f"race: {where} touches {mem}[{lo + first}], which instruction "
                        f"#{int(instr[first])} on the {other} unit {how} with no token or "
                        f"SYNC ordering the two")


def footprint(ins: Instr, fp: hazards.Footprint | None, mem: Any
              ) -> list[tuple[str, int, int, bool]]:
    """(memory, lo, hi, write) ranges an instruction touches in INP and ACC, and the
    activations a DMA moves in PCACHE or host memory; ``fp`` is a GEMM's or VEC's
    ``hazards`` footprint (pools' windows are read from ``mem``)."""
    if ins.op == Op.LOAD:
        if ins.kind != Kind.ACT:
            return []
        n = ((ins.rows + ins.pad_top + ins.pad_bottom) * (ins.cols + ins.pad_left +
                                                          ins.pad_right) * ins.depth)
        span = (ins.rows - 1) * ins.stride + ins.cols * ins.depth if ins.rows else 0
        return [("inp", ins.sram, ins.sram + n, True),
                (_SPACE[Space(ins.space)], ins.dram, ins.dram + span, False)]
    if ins.op == Op.STORE:
        span = ((ins.rows - 1) * ins.stride + (ins.cols - 1) * (ins.pitch or ins.depth)
                + ins.depth if ins.rows and ins.cols else 0)
        return [("inp", ins.sram, ins.sram + ins.rows * ins.cols * ins.depth, False),
                (_SPACE[Space(ins.space)], ins.dram, ins.dram + span, True)]
    if ins.op == Op.XFER:
        return [("host", ins.host, ins.host + ins.bytes, bool(ins.to_host)),
                ("pcache", ins.pcache, ins.pcache + ins.bytes, not ins.to_host)]
    if ins.op == Op.GEMM:
        assert fp is not None
        acc = [("acc", lo, hi, True) for lo, hi in fp.acc_write]
        return acc + [("inp", lo, hi, False) for lo, hi in fp.inp_read]
    if ins.op == Op.VEC:
        if VecOp(ins.vop) in (VecOp.MAXPOOL, VecOp.AVGPOOL):
            p = dict(zip(POOL_KEYS, (int(v) for v in mem.words(ins.param, len(POOL_KEYS),
                                                                  "race check"))))
            in_h = (p["out_h"] - 1) * p["stride"] + p["kh"]
            size_in = in_h * p["in_w"] * p["channels"]
            size_out = p["out_h"] * p["out_w"] * p["channels"]
            return [("inp", ins.src, ins.src + size_in, False),
                    ("inp", ins.dst, ins.dst + size_out, True)]
        assert fp is not None
        return ([("acc", lo, hi, False) for lo, hi in fp.acc_read] +
                [("inp", lo, hi, False) for lo, hi in fp.inp_read] +
                [("inp", lo, hi, True) for lo, hi in fp.inp_write])
    return []
