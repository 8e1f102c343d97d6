"""edge-npu instruction set: 128-bit instructions, binary encoding and assembly text.

Bits 0-2 hold the opcode, bits 3-6 the VTA-style dependence flags (pop_prev, pop_next,
push_prev, push_next); the op's fields follow, low bits first, in the order of
``LAYOUTS``. One instruction stream is dispatched to four in-order queues, a ring:

    load queue     LOAD            (prev: host, next: compute)
    compute queue  CFG GEMM VEC    (prev: load, next: store)
    store queue    STORE           (prev: compute, next: host)
    host queue     XFER            (prev: store, next: load)
    all queues     SYNC (barrier + layer launch), END

The host queue is the host link's own DMA engine: XFER copies bytes between host memory
and the parameter cache, so a transfer over the slow link need not hold the load or
store queue (VTA has only the three; its loads and stores cross the link themselves, as
edge-npu's still may). Its tokens go to the load queue (rows that have arrived) and come
from the store queue (rows that may leave).

Memories: HOST (behind the host link), PCACHE (parameter cache, bytes), INP
(activation banks, int8) and ACC (accumulators, int32 words).

Assembly: ``GEMM df=ws reset=1 chain=0 m0=0 ... +pop_prev +push_next`` (one
instruction per line, ``#`` comments).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

import numpy as np
from edgec.errors import EdgecError

WIDTH = 128
DEP_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


class Op(enum.IntEnum):
    LOAD = 0
    GEMM = 1
    VEC = 2
    STORE = 3
    SYNC = 4
    END = 5
    CFG = 6
    XFER = 7


class Kind(enum.IntEnum):
    """What a LOAD moves; ACT goes to INP, the others to PCACHE."""

    ACT = 0
    WGT = 1
    BIAS = 2
    PARAM = 3


class Space(enum.IntEnum):
    """Source (LOAD) or destination (STORE) of a DMA."""

    HOST = 0
    PCACHE = 1


class Dataflow(enum.IntEnum):
    WS = 0
    OS = 1


class VecOp(enum.IntEnum):
    REQUANT = 0  # ACC int32 (+bias) -> INP int8, per-channel mult/shift
    CLAMP = 1
    LUT = 2
    ADD = 3
    MUL = 4
    MAXPOOL = 5
    AVGPOOL = 6


class Rounding(enum.IntEnum):
    """How VEC requant / add / mul round ``x * M`` (``M = mult * 2**-shift``); see README.

    GEMMLOWP is 0 so that programs written before the field existed keep their meaning."""

    GEMMLOWP = 0  # Q0.31 mult: SaturatingRoundingDoublingHighMul + RoundingDivideByPOT
    BINARY32 = 1  # 24-bit mult: exact product rounded to 24 significant bits, then to int


ENUMS: dict[str, type[enum.IntEnum]] = {"kind": Kind, "space": Space, "df": Dataflow,
                                        "vop": VecOp, "rnd": Rounding}

# (field, bits); signed fields are listed in SIGNED. Widths sum to <= 121.
LAYOUTS: dict[Op, tuple[tuple[str, int], ...]] = {
    # 2-D strided DMA: ``rows`` runs of ``cols`` pixels of ``depth`` elements, runs
    # ``stride`` elements apart in DRAM, dense in SRAM; padding of top/bottom rows and
    # left/right pixels with ``pad_value`` (activations) or 0 is made on the SRAM side.
    Op.LOAD: (("kind", 2), ("space", 1), ("dram", 28), ("sram", 23), ("rows", 11),
              ("cols", 11), ("depth", 11), ("stride", 14), ("pad_top", 3),
              ("pad_bottom", 3), ("pad_left", 3), ("pad_right", 3), ("pad_value", 8)),
    # acc[m, n] (+)= sum_k A[m0+m, k0+k] * W[k, n]; A is read from INP through the
    # implicit im2col of the last CFG; W row k at wgt + k*wgt_stride in PCACHE.
    # ``diag``: W is block-diagonal (depthwise), stored compactly as one weight per k:
    # W[k, n] = wgt[k] if k % kc == n else 0. With ``lanes`` g > 1 (a packed depthwise
    # group, ``programs.Conv.pack``) the window is g pixels wide: column n = (q, c) holds
    # channel c's kh x kw taps shifted q*s to the right, read from the group's compact
    # (i, j, c) block at ``wgt`` (s = CFG stride / g, kw = CFG kw - (g-1)*s).
    Op.GEMM: (("df", 1), ("reset", 1), ("chain", 1), ("diag", 1), ("m0", 14), ("m_len", 14),
              ("k0", 14), ("k_len", 14), ("n_len", 9), ("wgt", 23), ("acc", 16),
              ("lanes", 7)),
    # Geometry registers for GEMM: INP tile is (rows, in_w, cin) int8, the window has
    # kh x kw x kc channels starting at c_base; output pixels are out_w wide. ``stride``
    # steps along x, ``stride_h`` along y (0: same as ``stride``, so programs written
    # before the field existed keep their meaning).
    Op.CFG: (("inp", 20), ("in_w", 12), ("cin", 12), ("kc", 12), ("c_base", 12),
             ("kh", 4), ("kw", 4), ("stride", 3), ("out_w", 12), ("wgt_stride", 14),
             ("acc_stride", 12), ("stride_h", 3)),
    # Vector op; scalars and per-channel tables live in PCACHE at ``param``; ``rnd``:
    # the rounding of requant / add / mul (``Rounding``), ignored by the other ops.
    # ADD / MUL with ``cols`` > 0 read ``src2`` as one pixel of ``cols`` channels,
    # repeated over the ``count / cols`` pixels at ``src`` (0: ``count`` elements).
    Op.VEC: (("vop", 4), ("src", 20), ("src2", 20), ("dst", 20), ("count", 20),
             ("cols", 12), ("param", 23), ("rnd", 1)),
    # STORE: ``rows`` runs of ``cols`` pixels of ``depth`` elements, dense in SRAM; runs
    # ``stride`` and pixels ``pitch`` apart in DRAM (pitch 0: ``depth``, a dense run).
    Op.STORE: (("space", 1), ("dram", 28), ("sram", 20), ("rows", 11), ("cols", 11),
               ("depth", 11), ("stride", 14), ("pitch", 14)),
    # ``bytes`` contiguous bytes between host memory at ``host`` and the parameter cache
    # at ``pcache``; ``to_host`` 0: in (host -> PCACHE), 1: out
    Op.XFER: (("to_host", 1), ("host", 28), ("pcache", 23), ("bytes", 23)),
    Op.SYNC: (),
    Op.END: (),
}
SIGNED = {"pad_value"}
QUEUE = {Op.LOAD: "load", Op.GEMM: "compute", Op.CFG: "compute", Op.VEC: "compute",
         Op.STORE: "store", Op.XFER: "host", Op.SYNC: "all", Op.END: "all"}
# Which dependence flags each queue may use: every queue has both neighbours in the ring
ALLOWED_DEPS = {"load": set(DEP_FLAGS), "store": set(DEP_FLAGS), "compute": set(DEP_FLAGS),
                "host": set(DEP_FLAGS), "all": set()}

for _op, _layout in LAYOUTS.items():
    assert 7 + sum(b for _, b in _layout) <= WIDTH, _op


def y_stride(cfg_fields: dict[str, int]) -> int:
    """A CFG's y stride: ``stride_h``, or ``stride`` when it is 0."""
    return cfg_fields.get("stride_h") or cfg_fields["stride"]


def vec_operand_len(ins: Instr) -> int:
    """Elements an ADD / MUL reads at ``src2``: ``cols`` (a broadcast pixel) or
    ``count``."""
    return ins.cols or ins.count


class IsaError(EdgecError):
    """A malformed instruction, encoding or assembly line."""


@functools.cache
def _field_ranges(op: Op) -> tuple[tuple[str, ...], tuple[tuple[str, int, int, int], ...]]:
    """``op``'s field names in layout order, and (name, bits, lo, hi) of each: checked
    for every instruction built, so computed once per opcode."""
    layout = LAYOUTS[op]
    return (tuple(n for n, _ in layout),
            tuple((n, b, *((-(1 << (b - 1)), (1 << (b - 1)) - 1) if n in SIGNED
                            else (0, (1 << b) - 1))) for n, b in layout))


@dataclass(frozen=True)
class Instr:
    """One instruction: opcode, its fields (all ints) and dependence flags."""

    op: Op
    fields: dict[str, int] = field(default_factory=dict)
    deps: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        names, ranges = _field_ranges(self.op)
        extra = self.fields.keys() - names
        if extra:
            raise IsaError(f"{self.op.name}: unknown field(s) {sorted(extra)}")
        given = self.fields
        full = {n: int(given.get(n, 0)) for n in names}
        for name, bits, lo, hi in ranges:
            if not lo <= full[name] <= hi:
                raise IsaError(f"{self.op.name}: field {name}={full[name]} does not fit "
                               f"{bits} bits [{lo}, {hi}]")
        object.__setattr__(self, "fields", full)
        bad = set(self.deps) - ALLOWED_DEPS[QUEUE[self.op]]
        if bad:
            raise IsaError(f"{self.op.name}: dependence flag(s) {sorted(bad)} not allowed "
                           f"on the {QUEUE[self.op]} queue")
        object.__setattr__(self, "deps", frozenset(self.deps))

    def __getattr__(self, name: str) -> int:
        # fields read as attributes: ``ins.m_len``
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def queue(self) -> str:
        return QUEUE[self.op]


def make(op: Op, deps: tuple[str, ...] | frozenset[str] = (), **fields: int) -> Instr:
    """Build an instruction: ``make(Op.GEMM, ("pop_prev",), m_len=64, ...)``."""
    return Instr(op, dict(fields), frozenset(deps))


# -- binary --------------------------------------------------------------------------
def encode(ins: Instr) -> int:
    """Instruction -> 128-bit integer."""
    word = int(ins.op)
    for i, flag in enumerate(DEP_FLAGS):
        word |= int(flag in ins.deps) << (3 + i)
    pos = 7
    for name, bits in LAYOUTS[ins.op]:
        word |= (ins.fields[name] & ((1 << bits) - 1)) << pos
        pos += bits
    return word


def decode(word: int) -> Instr:
    """128-bit integer -> instruction; unused bits must be zero."""
    if not 0 <= word < 1 << WIDTH:
        raise IsaError(f"instruction word {word:#x} is not a {WIDTH}-bit value")
    op = Op(word & 7)  # all eight opcodes are defined
    deps = frozenset(f for i, f in enumerate(DEP_FLAGS) if word >> (3 + i) & 1)
    fields, pos = {}, 7
    for name, bits in LAYOUTS[op]:
        value = (word >> pos) & ((1 << bits) - 1)
        if name in SIGNED and value >> (bits - 1):
            value -= 1 << bits
        fields[name] = value
        pos += bits
    if word >> pos:
        raise IsaError(f"instruction word {word:#x}: {op.name} has non-zero unused bits")
    return Instr(op, fields, deps)


def to_bytes(program: list[Instr]) -> bytes:
    """Program -> little-endian 16-byte records."""
    return b"".join(encode(i).to_bytes(WIDTH // 8, "little") for i in program)


def from_bytes(blob: bytes) -> list[Instr]:
    n = WIDTH // 8
    if len(blob) % n:
        raise IsaError(f"program of {len(blob)} bytes is not a whole number of "
                       f"{n}-byte instructions")
    return [decode(int.from_bytes(blob[i:i + n], "little")) for i in range(0, len(blob), n)]


# -- assembly ------------------------------------------------------------------------
def format_instr(ins: Instr) -> str:
    parts = [ins.op.name]
    for name, _ in LAYOUTS[ins.op]:
        value = ins.fields[name]
        parts.append(f"{name}={ENUMS[name](value).name.lower()}" if name in ENUMS
                     else f"{name}={value}")
    parts += [f"+{f}" for f in DEP_FLAGS if f in ins.deps]
    return " ".join(parts)


def format_program(program: list[Instr]) -> str:
    return "".join(format_instr(i) + "\n" for i in program)


def parse_instr(line: str, lineno: int = 1) -> Instr:
    """One assembly line -> instruction (omitted fields are 0)."""
    tokens = line.split("#", 1)[0].split()
    where = f"assembly line {lineno}"
    if not tokens:
        raise IsaError(f"{where}: empty")
    try:
        op = Op[tokens[0].upper()]
    except KeyError:
        raise IsaError(f"{where}: unknown mnemonic {tokens[0]!r}") from None
    fields: dict[str, int] = {}
    deps: set[str] = set()
    for tok in tokens[1:]:
        if tok.startswith("+"):
            if tok[1:] not in DEP_FLAGS:
                raise IsaError(f"{where}: unknown dependence flag {tok!r}")
            deps.add(tok[1:])
            continue
        name, eq, text = tok.partition("=")
        if not eq:
            raise IsaError(f"{where}: expected name=value, got {tok!r}")
        try:
            fields[name] = (ENUMS[name][text.upper()] if name in ENUMS
                            else int(text, 0))
        except (KeyError, ValueError):
            raise IsaError(f"{where}: bad value {text!r} for {name}") from None
    try:
        return Instr(op, fields, frozenset(deps))
    except IsaError as exc:
        raise IsaError(f"{where}: {exc}") from None


def parse_program(text: str) -> list[Instr]:
    return [parse_instr(line, n) for n, line in enumerate(text.splitlines(), 1)
            if line.split("#", 1)[0].strip()]


# -- VEC parameter blocks (int32 words in PCACHE) -------------------------------------
def requant_block(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray, zp: int,
                  qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """REQUANT: [zp, qmin, qmax, bias[cols], mult[cols], shift[cols]]."""
    return np.concatenate([[zp, qmin, qmax], bias, mult, shift]).astype(np.int32)


def clamp_block(qmin: int, qmax: int) -> np.ndarray:
    return np.array([qmin, qmax], dtype=np.int32)


def lut_block(table: np.ndarray) -> np.ndarray:
    """LUT: 256 words, entry i is the output for input i - 128."""
    return np.asarray(table, dtype=np.int32).reshape(256)


ADD_KEYS = ("zp1", "mult1", "shift1", "zp2", "mult2", "shift2", "mult_out", "shift_out",
            "zp_out", "qmin", "qmax")
MUL_KEYS = ("zp1", "zp2", "mult", "shift", "zp_out", "qmin", "qmax")
POOL_KEYS = ("in_w", "channels", "kh", "kw", "stride", "out_h", "out_w", "qmin", "qmax")


def keyed_block(keys: tuple[str, ...], **values: int) -> np.ndarray:
    """ADD / MUL / pool blocks: the named scalars in the order of ``keys``."""
    missing = set(keys) - set(values)
    if missing:
        raise IsaError(f"parameter block lacks {sorted(missing)}")
    return np.array([values[k] for k in keys], dtype=np.int32)
