"""Functional semantics of edge-npu instructions: exact integer arithmetic on numpy.

``Memory`` holds the four memories; ``execute(mem, ins)`` applies one instruction and
returns the SRAM bytes it touched (for traffic and energy). Every address is checked,
so a bad program fails with the instruction and the memory it overran.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from edgec.errors import EdgecError
from numpy.lib.stride_tricks import as_strided

from . import intmath, rounding
from .config import NpuConfig
from .isa import (
    ADD_KEYS,
    MUL_KEYS,
    POOL_KEYS,
    Dataflow,
    Instr,
    Kind,
    Op,
    Rounding,
    Space,
    VecOp,
    vec_operand_len,
    y_stride,
)


class SimError(EdgecError):
    """The program is wrong: bad address, bad shape, deadlock, token misuse."""


@dataclass
class Memory:
    """HOST and PCACHE are bytes; INP is int8; ACC is int32 words."""

    cfg: NpuConfig
    host: np.ndarray
    pcache: np.ndarray = field(init=False)
    inp: np.ndarray = field(init=False)
    acc: np.ndarray = field(init=False)
    regs: dict[str, int] | None = None  # last CFG
    peak: dict[str, int] = field(default_factory=lambda: {"inp": 0, "acc": 0, "pcache": 0})

    def __post_init__(self) -> None:
        self.pcache = np.zeros(self.cfg.parameter_cache, dtype=np.uint8)
        self.inp = np.zeros(self.cfg.activation_bytes, dtype=np.int8)
        self.acc = np.zeros(self.cfg.accumulator_words, dtype=np.int32)

    @classmethod
    def create(cls, cfg: NpuConfig, host_bytes: int) -> Memory:
        return cls(cfg, np.zeros(host_bytes, dtype=np.uint8))

    def space(self, space: int) -> np.ndarray:
        return self.host if space == Space.HOST else self.pcache

    def write(self, space: Space, addr: int, data: np.ndarray) -> None:
        """Place an array's bytes (little-endian) in HOST or PCACHE."""
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        mem = self.space(space)
        if addr < 0 or addr + raw.size > mem.size:
            raise SimError(f"write of {raw.size} bytes at {space.name.lower()}[{addr}] "
                           f"exceeds its {mem.size} bytes")
        mem[addr:addr + raw.size] = raw
        if space == Space.PCACHE:
            self.peak["pcache"] = max(self.peak["pcache"], addr + raw.size)

    def read(self, space: Space, addr: int, count: int, dtype: type = np.int8) -> np.ndarray:
        n = count * np.dtype(dtype).itemsize
        return self.space(space)[addr:addr + n].view(dtype).copy()

    def words(self, addr: int, count: int, where: str) -> np.ndarray:
        """int32 words of a VEC parameter block in PCACHE."""
        _check(where, "pcache", addr, count * 4, self.pcache.size)
        return self.pcache[addr:addr + 4 * count].view(np.int32).astype(np.int64)


def _check(where: str, mem: str, start: int, length: int, size: int) -> None:
    if start < 0 or start + length > size:
        raise SimError(f"{where}: {mem}[{start}:{start + length}] is outside its {size} "
                       f"{'words' if mem == 'acc' else 'bytes'}")


def _strided(buf: np.ndarray, start: int, rows: int, row_len: int, stride: int) -> np.ndarray:
    """View of ``rows`` runs of ``row_len`` bytes, ``stride`` bytes apart (checked)."""
    return as_strided(buf[start:], shape=(rows, row_len), strides=(stride, 1), writeable=False)


def _load(mem: Memory, ins: Instr, where: str) -> int:
    esize = 4 if ins.kind in (Kind.BIAS, Kind.PARAM) else 1
    pix = ins.depth * esize
    src = mem.space(ins.space)
    if ins.kind != Kind.ACT and ins.space != Space.HOST:
        raise SimError(f"{where}: parameters are loaded from host into the parameter cache")
    span = (ins.rows - 1) * ins.stride * esize + ins.cols * pix if ins.rows else 0
    _check(where, ins_space_name(ins.space), ins.dram, span, src.size)
    data = _strided(src, ins.dram, ins.rows, ins.cols * pix, ins.stride * esize)
    fill = np.uint8(ins.pad_value & 0xFF) if ins.kind == Kind.ACT else np.uint8(0)
    out = np.full((ins.rows + ins.pad_top + ins.pad_bottom,
                   ins.cols + ins.pad_left + ins.pad_right, pix), fill, dtype=np.uint8)
    out[ins.pad_top:ins.pad_top + ins.rows, ins.pad_left:ins.pad_left + ins.cols] = \
        data.reshape(ins.rows, ins.cols, pix)
    flat = out.reshape(-1)
    if ins.kind == Kind.ACT:
        _check(where, "inp", ins.sram, flat.size, mem.inp.size)
        mem.inp[ins.sram:ins.sram + flat.size] = flat.view(np.int8)
        mem.peak["inp"] = max(mem.peak["inp"], ins.sram + flat.size)
    else:
        _check(where, "pcache", ins.sram, flat.size, mem.pcache.size)
        mem.pcache[ins.sram:ins.sram + flat.size] = flat
        mem.peak["pcache"] = max(mem.peak["pcache"], ins.sram + flat.size)
    return flat.size + (span if ins.space == Space.PCACHE else 0)


def ins_space_name(space: int) -> str:
    return Space(space).name.lower()


def _store(mem: Memory, ins: Instr, where: str) -> int:
    pix = ins.depth
    n = ins.rows * ins.cols * pix
    _check(where, "inp", ins.sram, n, mem.inp.size)
    dst = mem.space(ins.space)
    pitch = ins.pitch or pix
    if pitch < pix:
        raise SimError(f"{where}: STORE pitch {pitch} is less than its {pix}-byte pixels")
    span = ((ins.rows - 1) * ins.stride + (ins.cols - 1) * pitch + pix
            if ins.rows and ins.cols else 0)
    _check(where, ins_space_name(ins.space), ins.dram, span, dst.size)
    data = mem.inp[ins.sram:ins.sram + n].view(np.uint8).reshape(ins.rows, ins.cols, pix)
    for r in range(ins.rows):  # rows are few; a writeable strided view would alias
        start = ins.dram + r * ins.stride
        if pitch == pix:
            dst[start:start + ins.cols * pix] = data[r].reshape(-1)
        else:  # pixels scattered ``pitch`` apart (no two overlap: pitch >= depth)
            dst[start + np.arange(ins.cols)[:, None] * pitch + np.arange(pix)] = data[r]
    if ins.space == Space.PCACHE:
        mem.peak["pcache"] = max(mem.peak["pcache"], ins.dram + span)
    return n * (2 if ins.space == Space.PCACHE else 1)


def _gemm(mem: Memory, ins: Instr, where: str) -> int:
    cfg, g = mem.cfg, mem.regs
    if g is None:
        raise SimError(f"{where}: GEMM before any CFG")
    df = Dataflow(ins.df)
    if df == Dataflow.WS and (ins.k_len > cfg.rows or ins.n_len > cfg.cols):
        raise SimError(f"{where}: WS fold k_len={ins.k_len} x n_len={ins.n_len} exceeds "
                       f"the {cfg.rows}x{cfg.cols} array")
    if df == Dataflow.OS and (ins.m_len > cfg.rows or ins.n_len > cfg.cols):
        raise SimError(f"{where}: OS fold m_len={ins.m_len} x n_len={ins.n_len} exceeds "
                       f"the {cfg.rows}x{cfg.cols} array")
    if ins.k0 + ins.k_len > g["kh"] * g["kw"] * g["kc"]:
        raise SimError(f"{where}: k range ends at {ins.k0 + ins.k_len}, past the "
                       f"{g['kh']}x{g['kw']}x{g['kc']} window of the last CFG")
    if g["out_w"] == 0:
        raise SimError(f"{where}: CFG out_w is 0")
    m = ins.m0 + np.arange(ins.m_len)
    k = ins.k0 + np.arange(ins.k_len)
    oy, ox = m // g["out_w"], m % g["out_w"]
    i, j, c = k // (g["kw"] * g["kc"]), (k // g["kc"]) % g["kw"], k % g["kc"]
    y = oy[:, None] * y_stride(g) + i[None, :]
    x = ox[:, None] * g["stride"] + j[None, :]
    if (x >= g["in_w"]).any():
        raise SimError(f"{where}: window column reaches {int(x.max())}, tile is "
                       f"{g['in_w']} wide")
    addr = g["inp"] + (y * g["in_w"] + x) * g["cin"] + g["c_base"] + c[None, :]
    if addr.size and (addr.max() >= mem.inp.size):
        raise SimError(f"{where}: im2col reads inp[{int(addr.max())}], past its "
                       f"{mem.inp.size} bytes")
    a = mem.inp[addr]
    if ins.diag and ins.lanes > 1:
        w, w_read = _lanes_weights(mem, ins, g, i, j, c, where)
    elif ins.diag:  # block-diagonal: expand the compact per-k weights on the fly
        _check(where, "pcache", ins.wgt, ins.k_len, mem.pcache.size)
        compact = mem.pcache[ins.wgt:ins.wgt + ins.k_len].view(np.int8)
        w = np.where(c[:, None] == np.arange(ins.n_len)[None, :], compact[:, None], 0)
        w_read = ins.k_len
    else:
        w_span = (ins.k_len - 1) * g["wgt_stride"] + ins.n_len if ins.k_len else 0
        _check(where, "pcache", ins.wgt, w_span, mem.pcache.size)
        w = _strided(mem.pcache, ins.wgt, ins.k_len, ins.n_len, g["wgt_stride"]).view(np.int8)
        w_read = w.size
    a_span = (ins.m_len - 1) * g["acc_stride"] + ins.n_len if ins.m_len else 0
    _check(where, "acc", ins.acc, a_span, mem.acc.size)
    # float64 products of int8 are exact while |sum| < 2**53, far beyond any K here
    prod = (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    rows = ins.acc + np.arange(ins.m_len)[:, None] * g["acc_stride"] + np.arange(ins.n_len)
    if ins.reset:
        mem.acc[rows] = prod.astype(np.int32)
    else:  # int32 accumulators wrap like the hardware's
        mem.acc[rows] = (mem.acc[rows].astype(np.int64) + prod).astype(np.int32)
    mem.peak["acc"] = max(mem.peak["acc"], 4 * (ins.acc + a_span))
    return a.size + w_read + 4 * prod.size * (1 if ins.reset else 2)


def _lanes_weights(mem: Memory, ins: Instr, g: dict[str, int], i: np.ndarray, j: np.ndarray,
                   c: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """A packed depthwise fold's K x N weights from the group's compact taps: row
    (i, j', c), column (q, c') is tap (i, j' - q*s) of channel c if c == c'; and the
    taps it reads."""
    lanes, kc = ins.lanes, g["kc"]
    s, rem = divmod(g["stride"], lanes)
    kw = g["kw"] - (lanes - 1) * s
    if rem or s < 1 or kw < 1 or ins.n_len != lanes * kc:
        raise SimError(f"{where}: {lanes} lanes do not fit the CFG (stride {g['stride']}, "
                       f"kw {g['kw']}, kc {kc}, n_len {ins.n_len})")
    n_taps = g["kh"] * kw * kc
    _check(where, "pcache", ins.wgt, n_taps, mem.pcache.size)
    taps = mem.pcache[ins.wgt:ins.wgt + n_taps].view(np.int8).reshape(g["kh"], kw, kc)
    n = np.arange(ins.n_len)
    jj = j[:, None] - (n // kc)[None, :] * s
    hit = (c[:, None] == (n % kc)[None, :]) & (jj >= 0) & (jj < kw)
    return (np.where(hit, taps[i[:, None], np.clip(jj, 0, kw - 1), c[:, None]], 0),
            int(hit.sum()))


def _vec(mem: Memory, ins: Instr, where: str) -> int:
    vop = VecOp(ins.vop)
    rnd = Rounding(ins.rnd)
    n = ins.count
    if vop == VecOp.REQUANT:
        if ins.cols == 0 or n % ins.cols:
            raise SimError(f"{where}: REQUANT count {n} is not a multiple of cols {ins.cols}")
        _check(where, "acc", ins.src, n, mem.acc.size)
        p = mem.words(ins.param, 3 + 3 * ins.cols, where)
        zp, qmin, qmax = (int(v) for v in p[:3])
        bias, mult, shift = p[3:].reshape(3, ins.cols)
        acc = mem.acc[ins.src:ins.src + n].astype(np.int64).reshape(-1, ins.cols) + bias
        out = rounding.requantize(acc, mult, shift, zp, qmin, qmax, rnd).reshape(-1)
        moved = 4 * n + n + 12 * ins.cols
    elif vop in (VecOp.MAXPOOL, VecOp.AVGPOOL):
        p = dict(zip(POOL_KEYS, (int(v) for v in mem.words(ins.param, len(POOL_KEYS), where))))
        in_h = (p["out_h"] - 1) * p["stride"] + p["kh"]
        size = in_h * p["in_w"] * p["channels"]
        _check(where, "inp", ins.src, size, mem.inp.size)
        tile = mem.inp[ins.src:ins.src + size].reshape(in_h, p["in_w"], p["channels"])
        wins = [tile[i:i + (p["out_h"] - 1) * p["stride"] + 1:p["stride"],
                     j:j + (p["out_w"] - 1) * p["stride"] + 1:p["stride"]].astype(np.int64)
                for i in range(p["kh"]) for j in range(p["kw"])]
        if vop == VecOp.MAXPOOL:
            res = np.max(wins, axis=0)
        else:
            res = intmath.avg_pool_round(np.sum(wins, axis=0), p["kh"] * p["kw"])
        out = np.clip(res, p["qmin"], p["qmax"]).astype(np.int8).reshape(-1)
        moved = size + out.size
    else:
        _check(where, "inp", ins.src, n, mem.inp.size)
        x = mem.inp[ins.src:ins.src + n]
        moved = 2 * n
        if vop == VecOp.CLAMP:
            lo, hi = (int(v) for v in mem.words(ins.param, 2, where))
            out = np.clip(x, lo, hi).astype(np.int8)
        elif vop == VecOp.LUT:
            table = mem.words(ins.param, 256, where).astype(np.int8)
            out = table[x.astype(np.int64) + 128]
        else:
            m = vec_operand_len(ins)
            if n % m:
                raise SimError(f"{where}: {n} elements are not whole pixels of the "
                               f"{m}-channel broadcast operand")
            _check(where, "inp", ins.src2, m, mem.inp.size)
            x2 = np.tile(mem.inp[ins.src2:ins.src2 + m], n // m)
            moved += m
            keys = ADD_KEYS if vop == VecOp.ADD else MUL_KEYS
            p = dict(zip(keys, (int(v) for v in mem.words(ins.param, len(keys), where))))
            if vop == VecOp.ADD:
                out = rounding.add_int8(x, p["zp1"], x2, p["zp2"], p, p["zp_out"],
                                        p["qmin"], p["qmax"], rnd)
            else:
                out = rounding.mul_int8(x, p["zp1"], x2, p["zp2"], p["mult"], p["shift"],
                                        p["zp_out"], p["qmin"], p["qmax"], rnd)
    _check(where, "inp", ins.dst, out.size, mem.inp.size)
    mem.inp[ins.dst:ins.dst + out.size] = out
    mem.peak["inp"] = max(mem.peak["inp"], ins.dst + out.size)
    return moved


def execute(mem: Memory, ins: Instr, index: int) -> int:
    """Apply one instruction; returns on-chip SRAM bytes read plus written."""
    where = f"instruction #{index} {ins.op.name}"
    if ins.op == Op.LOAD:
        return _load(mem, ins, where)
    if ins.op == Op.STORE:
        return _store(mem, ins, where)
    if ins.op == Op.CFG:
        mem.regs = dict(ins.fields)
        return 0
    if ins.op == Op.GEMM:
        return _gemm(mem, ins, where)
    if ins.op == Op.VEC:
        return _vec(mem, ins, where)
    if ins.op == Op.XFER:
        return _xfer(mem, ins, where)
    return 0


def _xfer(mem: Memory, ins: Instr, where: str) -> int:
    _check(where, "host", ins.host, ins.bytes, mem.host.size)
    _check(where, "pcache", ins.pcache, ins.bytes, mem.pcache.size)
    host = slice(ins.host, ins.host + ins.bytes)
    pc = slice(ins.pcache, ins.pcache + ins.bytes)
    if ins.to_host:
        mem.host[host] = mem.pcache[pc]
    else:
        mem.pcache[pc] = mem.host[host]
        mem.peak["pcache"] = max(mem.peak["pcache"], ins.pcache + ins.bytes)
    return ins.bytes
