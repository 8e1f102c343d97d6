"""Whole-model programs from a layer table (workloads/*.csv): placement + layer programs.

A table row is ``name,op,input,input2,h,w,cin,cout,k,stride`` with op in conv, dw,
add, avgpool (h, w: input size; TF "SAME" padding). Placement follows the Edge TPU:
weights go greedily into the parameter cache in layer order and are streamed from the
host once it is full; the model input comes from the host and the output returns to
it; intermediate activations live in the parameter cache's free space (first fit,
freed after their last reader). This is the tests' and benchmarks' stand-in for the
compiler, which will build the same structures from real models.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import intmath, programs
from .config import NpuConfig
from .isa import Instr, Space
from .programs import Conv, Placement, ProgramError

WORKLOADS = Path(__file__).parent / "workloads"


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    input: str
    input2: str
    h: int
    w: int
    cin: int
    cout: int
    k: int
    stride: int

    def conv(self) -> Conv:
        out = -(-self.h // self.stride)
        pad_h = max(0, (out - 1) * self.stride + self.k - self.h)
        pad_w = max(0, (-(-self.w // self.stride) - 1) * self.stride + self.k - self.w)
        pad = (pad_h // 2, pad_w // 2, pad_h - pad_h // 2, pad_w - pad_w // 2)
        return Conv(self.h, self.w, self.cin, self.cout, self.k, self.k, self.stride, pad,
                    self.op == "dw")

    @property
    def out_shape(self) -> tuple[int, int, int]:
        if self.op == "avgpool":
            return (1, 1, self.cout)
        if self.op == "add":
            return (self.h, self.w, self.cout)
        c = self.conv()
        return (c.out_h, c.out_w, c.cout)


def load_table(name_or_path: str | Path) -> list[Layer]:
    path = Path(name_or_path)
    if path.suffix != ".csv":
        path = WORKLOADS / f"{name_or_path}.csv"
    with open(path) as f:
        return [Layer(r["name"], r["op"], r["input"], r["input2"],
                      *(int(r[k]) for k in ("h", "w", "cin", "cout", "k", "stride")))
                for r in csv.DictReader(f)]


class _FirstFit:
    """First-fit allocator over [base, end) of the parameter cache."""

    def __init__(self, base: int, end: int):
        self.base, self.end = base, end
        self.used: dict[str, tuple[int, int]] = {}

    def alloc(self, key: str, size: int) -> int:
        addr = self.base
        for start, n in sorted(self.used.values()):
            if addr + size <= start:
                break
            addr = max(addr, start + n)
        if addr + size > self.end:
            raise ProgramError(f"activation {key} ({size} B) does not fit the parameter "
                               f"cache's free space")
        self.used[key] = (addr, size)
        return addr

    def free(self, key: str) -> None:
        self.used.pop(key, None)


@dataclass
class ModelProgram:
    instrs: list[Instr]
    macs: int
    cached_weights: int
    streamed_weights: int
    input_addr: int
    output_addr: int
    # (PCACHE or HOST, address, array) to write before running: weights and params
    images: list[tuple[Space, int, np.ndarray]] = field(default_factory=list)
    host_bytes: int = 0


def model_program(cfg: NpuConfig, layers: list[Layer], seed: int = 0,
                  dataflow: str | None = None) -> ModelProgram:
    """Program for a layer table with random int8 weights (for timing and speed runs)."""
    rng = np.random.default_rng(seed)
    images: list[tuple[Space, int, np.ndarray]] = []
    pc_top = 0
    host_top = 0
    first = layers[0]
    in_bytes = first.h * first.w * first.cin
    input_addr, host_top = host_top, host_top + in_bytes
    mult, shift = intmath.quantize_multiplier(1 / 4096)
    # pass 1: weights and parameter blocks, cached while they fit
    wplace: dict[str, tuple[int, int | None, int]] = {}
    cached = streamed = 0
    stage_size = 0
    # keep room for the three largest activations (a residual block's live set)
    sizes = sorted((int(np.prod(ly.out_shape)) for ly in layers), reverse=True)
    budget = cfg.parameter_cache - sum(sizes[:3])
    for ly in layers:
        if ly.op in ("conv", "dw"):
            conv = ly.conv()
            shape = (conv.cout, ly.k, ly.k) if conv.depthwise else (conv.cout, ly.k, ly.k, ly.cin)
            w = programs.pack_weights(conv, rng.integers(-8, 8, shape, dtype=np.int8), cfg.cols)
            p = programs.pack_requant(conv, rng.integers(-100, 100, conv.cout), mult, shift,
                                      0, -128, 127, cfg.cols)
            padr = pc_top
            images.append((Space.PCACHE, padr, p))
            pc_top += p.nbytes
            if pc_top + w.size <= budget:
                images.append((Space.PCACHE, pc_top, w))
                wplace[ly.name] = (padr, None, pc_top)
                pc_top += w.size
                cached += w.size
            else:
                images.append((Space.HOST, host_top, w))
                wplace[ly.name] = (padr, host_top, -1)
                host_top += w.size
                streamed += w.size
                stage_size = max(stage_size, w.size)
        elif ly.op == "add":
            p = intmath.add_params(0.05, 0.05, 0.07)
            images.append((Space.PCACHE, pc_top, programs.add_block(
                zp1=0, zp2=0, zp_out=0, qmin=-128, qmax=127, **p)))
            wplace[ly.name] = (pc_top, None, -1)
            pc_top += 4 * 16
        elif ly.op == "avgpool":
            images.append((Space.PCACHE, pc_top, programs.pool_block(ly.h, ly.w, ly.cin, ly.k, 1)))
            wplace[ly.name] = (pc_top, None, -1)
            pc_top += 4 * 16
        else:
            raise ProgramError(f"layer {ly.name}: unknown op {ly.op!r}")
    # streamed layers share one staging area after the cached weights
    stage = pc_top
    pc_top += stage_size
    alloc = _FirstFit(pc_top, cfg.parameter_cache)
    last_use = {}
    for i, ly in enumerate(layers):
        last_use[ly.input] = i
        if ly.input2:
            last_use[ly.input2] = i
    where: dict[str, tuple[Space, int]] = {"input": (Space.HOST, input_addr)}
    prog: list[Instr] = []
    macs = 0
    out_addr = host_top
    for i, ly in enumerate(layers):
        oh, ow, oc = ly.out_shape
        size = oh * ow * oc
        is_last = i == len(layers) - 1
        dst = (Space.HOST, out_addr) if is_last else (Space.PCACHE, alloc.alloc(ly.name, size))
        padr, host_w, pc_w = wplace[ly.name]
        if ly.op in ("conv", "dw"):
            conv = ly.conv()
            place = Placement(inp=where[ly.input], out=dst, wgt=pc_w if host_w is None else stage,
                              params=padr, stream_from=host_w)
            lp = programs.conv2d_layer(cfg, conv, place, dataflow)
            prog += lp.instrs
            macs += lp.macs
        elif ly.op == "add":
            prog += programs.add_layer(cfg, size, where[ly.input], where[ly.input2], dst, padr)
        else:
            prog += programs.global_avgpool_layer(cfg, ly.h, ly.w, ly.cin, where[ly.input],
                                                  dst, padr)
        where[ly.name] = dst
        for key in (ly.input, ly.input2):
            if key and last_use.get(key) == i:
                alloc.free(key)
    oh, ow, oc = layers[-1].out_shape
    return ModelProgram(prog + programs.end(), macs, cached, streamed, input_addr, out_addr,
                        images, out_addr + oh * ow * oc)
