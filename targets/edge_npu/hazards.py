"""On-chip ranges an instruction touches, for the vector unit's hazard checks.

With a vector command queue (config ``vector.queue``) the compute queue hands each VEC
to the vector unit and goes on, so a GEMM may run while earlier VECs still read the
accumulators or write the activation banks (as TPU v1's activation pipeline runs behind
its matrix unit, and Gemmini's execute unit checks hazards between its decoupled parts). A GEMM must wait
for an in-flight VEC when it would overwrite accumulators the VEC has yet to read
(write after read) or read activations the VEC has yet to write (read after write).
Ranges are half-open ``[lo, hi)``: accumulator words, activation-bank bytes. A range
that cannot be known without the memories (pool windows) is taken to run to the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .isa import Instr, VecOp, vec_operand_len, y_stride

Range = tuple[int, int]
_END = 1 << 62


@dataclass(frozen=True)
class Footprint:
    acc_read: tuple[Range, ...] = ()
    acc_write: tuple[Range, ...] = ()
    inp_read: tuple[Range, ...] = ()
    inp_write: tuple[Range, ...] = ()


def vec_footprint(ins: Instr) -> Footprint:
    """What a VEC reads and writes; pools read and write up to the end of the banks."""
    vop, n = VecOp(ins.vop), ins.count
    if vop == VecOp.REQUANT:
        return Footprint(acc_read=((ins.src, ins.src + n),), inp_write=((ins.dst, ins.dst + n),))
    if vop in (VecOp.MAXPOOL, VecOp.AVGPOOL):  # window geometry lives in a parameter block
        return Footprint(inp_read=((ins.src, _END),), inp_write=((ins.dst, _END),))
    reads = ((ins.src, ins.src + n),)
    if vop in (VecOp.ADD, VecOp.MUL):
        reads += ((ins.src2, ins.src2 + vec_operand_len(ins)),)
    return Footprint(inp_read=reads, inp_write=((ins.dst, ins.dst + n),))


def gemm_footprint(ins: Instr, regs: dict[str, Any] | None) -> Footprint:
    """The accumulators a GEMM writes and the input rows its im2col reads (last CFG)."""
    if regs is None or not regs.get("out_w"):
        return Footprint(acc_write=((0, _END),), inp_read=((0, _END),))
    stride_n = regs["acc_stride"] or ins.n_len
    acc = ((ins.acc, ins.acc + max(0, ins.m_len - 1) * stride_n + ins.n_len),)
    row = regs["in_w"] * regs["cin"]
    first = ins.m0 // regs["out_w"]
    last = (ins.m0 + max(ins.m_len, 1) - 1) // regs["out_w"]
    sh = y_stride(regs)
    lo = regs["inp"] + first * sh * row
    hi = regs["inp"] + (last * sh + regs["kh"]) * row
    return Footprint(acc_write=acc, inp_read=((lo, hi),))


def _meet(a: tuple[Range, ...], b: tuple[Range, ...]) -> bool:
    return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in a for lo2, hi2 in b)


def gemm_must_wait(vec: Footprint, gemm: Footprint) -> bool:
    """True when the GEMM would overwrite the VEC's accumulator inputs or read its output."""
    return _meet(vec.acc_read, gemm.acc_write) or _meet(vec.inp_write, gemm.inp_read)
