"""Program generators for the vector unit's layers: element-wise (LUT, ADD, MUL, copy)
and max pool, on HWC int8 tensors.

Element-wise layers stream chunks of whole pixels through the two activation banks
with VTA's double buffering (the token protocol of ``programs.add_layer``): load(i+2)
waits for compute(i) to release the bank, compute(i+2) waits for store(i). A second
operand that is a per-channel vector (squeeze-excite's scale) is loaded once per chunk,
one pixel, and the vector unit repeats it over the chunk's pixels (VEC ``cols``).

Max pool runs per band of output rows; padding is made by the DMA with -128 (never the
maximum). A LUT after the pool applies a monotone element-wise chain that came before it
in the graph (max commutes with a non-decreasing function).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import NpuConfig
from .isa import Instr, Kind, Op, Space, VecOp, make
from .programs import MAX_RUN, ProgramError, act_loads, pool_block
from .simulator import simulate

Loc = tuple[Space, int]
PREV = -1  # a vector step's operand: the result of the steps before it
Step = tuple[VecOp, int, tuple[int, int]]  # (op, parameter address, (operand, operand))


def elementwise_layer(cfg: NpuConfig, pixels: int, channels: int, inputs: list[Loc],
                      out: Loc, vops: list[tuple[VecOp, int]] | list[Step],
                      broadcast: bool = False, sync: bool = True,
                      pitch: int | None = None, up: Up | None = None) -> list[Instr]:
    """``out = vops(inputs)`` over ``pixels`` x ``channels`` int8 values.

    ``vops``: (op, PCACHE parameter address[, operands]); the first reads the inputs (two
    for ADD / MUL), later ones work in place; a copy is a CLAMP to [-128, 127]. A step's
    ``operands`` name what an ADD / MUL reads: input indices, or ``PREV`` for the result
    so far (``x + x * s``: MUL (0, 1), then ADD (0, PREV)). ``broadcast``: the second
    input is one pixel of ``channels`` values, repeated. ``pitch``: output pixels are
    that many bytes apart (a slice of a concat's channels), one run each. ``up``: one
    input is a nearest upsample's input, upsampled on the way (``upsampled_layer``).
    """
    pitch = pitch or channels
    if up is not None:
        return upsampled_layer(cfg, up.h * up.factor, pixels // (up.h * up.factor), channels,
                               inputs, out, vops, broadcast, sync, pitch, up)
    if not vops:
        raise ProgramError("element-wise layer without a vector op")
    if channels > 2047:
        raise ProgramError(f"{channels} channels exceed the 11-bit DMA depth")
    n_in = len(inputs)
    # a broadcast operand takes one pixel of the bank; the other inputs and the result
    # one chunk each
    small = channels if broadcast else 0
    chunk = min((cfg.activation_bank - small) // (n_in + 1 - bool(broadcast)) // channels,
                2047)
    if chunk == 0:
        raise ProgramError(f"one pixel of {channels} channels x {n_in + 1} buffers does not "
                           f"fit an activation bank ({cfg.activation_bank} B)")
    args = (cfg, pixels, channels, inputs, out, vops, broadcast, sync, pitch, small)
    if pitch == channels:
        return _elementwise(*args, chunk)
    # a pitched store takes a cycle a pixel, longer than the chunk's vector ops: smaller
    # chunks leave less of the last store after them
    sizes = {chunk} | {math.ceil(pixels / n) for n in (4, 8) if math.ceil(pixels / n) < chunk}
    return min((_elementwise(*args, size) for size in sorted(sizes)),
               key=lambda p: simulate(cfg, p + [make(Op.END)]).cycles)


def _elementwise(cfg: NpuConfig, pixels: int, channels: int, inputs: list[Loc], out: Loc,
                 vops: list[tuple[VecOp, int]] | list[Step], broadcast: bool, sync: bool,
                 pitch: int, small: int, chunk: int) -> list[Instr]:
    """``elementwise_layer``'s program in chunks of ``chunk`` pixels."""
    n_in = len(inputs)
    nchunks = math.ceil(pixels / chunk)
    cbytes = chunk * channels
    offs = [0]
    for j in range(n_in):
        offs.append(offs[-1] + (small if broadcast and j == 1 else cbytes))
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    for i in range(nchunks):
        p0 = i * chunk
        pix = min(chunk, pixels - p0)
        bank = (i % 2) * cfg.activation_bank
        more = i + 2 < nchunks
        for j, (space, addr) in enumerate(inputs):
            bc = broadcast and j == 1
            deps = (("pop_next",) if i >= 2 and j == 0 else ()) + \
                (("push_next",) if j == n_in - 1 else ())
            prog.append(make(Op.LOAD, deps, kind=Kind.ACT, space=space,
                             dram=addr + (0 if bc else p0 * channels), sram=bank + offs[j],
                             rows=1 if bc else pix, cols=1, depth=channels, stride=channels))
        n = pix * channels
        dst = bank + offs[n_in]
        for v, (vop, param, *operands) in enumerate(vops):
            first, last = v == 0, v == len(vops) - 1
            deps = ((("pop_prev",) + (("pop_next",) if i >= 2 else ())) if first else ()) + \
                (((("push_prev",) if more else ()) + ("push_next",)) if last else ())
            two = vop in (VecOp.ADD, VecOp.MUL)
            a, b = operands[0] if operands else ((0, 1) if first else (PREV, 1))
            if not two:
                b = None
            if PREV in (a, b) and first:
                raise ProgramError("the first vector op has no result to read")
            if broadcast and a == 1:
                raise ProgramError("a broadcast operand must be a vector op's second")
            prog.append(make(Op.VEC, deps, vop=vop,
                             src=dst if a == PREV else bank + offs[a],
                             src2=0 if b is None else dst if b == PREV else bank + offs[b],
                             cols=channels if broadcast and b == 1 else 0,
                             dst=dst, count=n, param=param))
        prog.append(make(Op.STORE, ("pop_prev",) + (("push_prev",) if more else ()),
                         space=out[0], dram=out[1] + p0 * pitch, sram=dst, rows=pix, cols=1,
                         depth=channels, stride=pitch))
    return prog


@dataclass(frozen=True)
class Up:
    """An element-wise layer's input ``index`` read before its nearest upsample by
    ``factor`` (``h`` input rows), through the LUT at ``lut`` (PCACHE) when its scale
    changes."""

    index: int
    factor: int
    h: int
    lut: int | None = None


def upsampled_fits(bank: int, w: int, c: int, f: int, full: int, broadcast: bool,
                   pitch: int | None = None) -> bool:
    """Whether ``upsampled_layer`` can run output rows of ``w`` pixels of ``c`` channels
    (``full`` full-size inputs; ``pitch`` bytes between output pixels) with one input
    row a chunk."""
    wl = w // f
    need = (full * f * w + wl + f * w) * c + (c if broadcast else 0)
    return (f > 1 and w % f == 0 and c <= MAX_RUN and f * wl <= MAX_RUN and need <= bank
            and f * (pitch or c) < 1 << 14 and f * c < 1 << 14)


def upsampled_layer(cfg: NpuConfig, h: int, w: int, c: int, inputs: list[Loc], out: Loc,
                    vops: list[tuple[VecOp, int]] | list[Step], broadcast: bool, sync: bool,
                    pitch: int, up: Up) -> list[Instr]:
    """``elementwise_layer`` where input ``up.index`` is the input of a nearest upsample
    by f = ``up.factor`` (output pixel (y, x) reads its pixel (y // f, x // f)): the
    upsampled tensor is never stored. A chunk is a band of its rows and the f times as
    many output rows. The full-size inputs come in one LOAD per column phase dx (pixels
    f x' + dx, one-pixel runs f pixels apart), each phase's pixels dense in the bank; the
    band in one LOAD (mapped through ``up.lut`` if it has one). The vector steps that do
    not read the band run once over the chunk, those that do once per phase and output
    row, against that row's band row; one STORE per phase scatters its pixels f apart.
    Chunks touch disjoint spans of every tensor, so the output may take an input's
    buffer. The largest bands that fit a bank, or bands half or a quarter as high,
    whichever simulates faster."""
    f, hl = up.factor, up.h
    wl = w // f
    full = len(inputs) - 1 - int(broadcast)
    if not upsampled_fits(cfg.activation_bank, w, c, f, full, broadcast, pitch):
        raise ProgramError(f"an element-wise layer of {h}x{w}x{c} upsampling by {f} does not "
                           f"fit an activation bank or the DMA fields")
    per_row = (full * f * w + wl + f * w) * c
    rows = min(hl, MAX_RUN // (f * wl), (cfg.activation_bank - c * broadcast) // per_row)
    sizes = {rows} | {math.ceil(hl / (n * math.ceil(hl / rows))) for n in (2, 4)}
    progs = [_upsampled(cfg, w, c, inputs, out, vops, broadcast, sync, pitch, up, r)
             for r in sorted(sizes)]
    return min(progs, key=lambda p: simulate(cfg, p + [make(Op.END)]).cycles)


def _upsampled(cfg: NpuConfig, w: int, c: int, inputs: list[Loc], out: Loc,
               vops: list[tuple[VecOp, int]] | list[Step], broadcast: bool, sync: bool,
               pitch: int, up: Up, rows: int) -> list[Instr]:
    """``upsampled_layer``'s program in bands of ``rows`` input rows of the upsample."""
    k, f = up.index, up.factor
    wl = w // f
    offs, at = [], 0
    for j in range(len(inputs)):
        offs.append(at)
        at += c if broadcast and j == 1 else (rows * wl if j == k else f * rows * w) * c
    bands = [(y0, min(rows, up.h - y0)) for y0 in range(0, up.h, rows)]
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    for i, (y0, r) in enumerate(bands):
        n = f * r * wl  # output pixels of one phase
        bank = (i % 2) * cfg.activation_bank
        dst, band = bank + at, bank + offs[k]
        more = i + 2 < len(bands)
        loads = []
        for j, (space, addr) in enumerate(inputs):
            if broadcast and j == 1:
                loads.append((space, addr, bank + offs[j], 1, 1, c))
            elif j == k:
                # the band's rows abut: one run (a row of wl * c bytes may not fit the
                # 14-bit stride field)
                loads.append((space, addr + y0 * wl * c, band, 1, r * wl, 0))
            else:  # phase dx: pixels f x' + dx of output rows f y0 ..., f pixels apart
                loads += [(space, addr + (f * y0 * w + dx) * c, bank + offs[j] + dx * n * c,
                           n, 1, f * c) for dx in range(f)]
        for q, (space, dram, sram, nr, cols, stride) in enumerate(loads):
            deps = (("pop_next",) if i >= 2 and q == 0 else ()) + \
                (("push_next",) if q == len(loads) - 1 else ())
            prog.append(make(Op.LOAD, deps, kind=Kind.ACT, space=space, dram=dram, sram=sram,
                             rows=nr, cols=cols, depth=c, stride=stride))
        vecs: list[dict[str, int]] = []
        if up.lut is not None:  # the upsample's own table, on its band in place
            vecs.append({"vop": VecOp.LUT, "src": band, "src2": 0, "cols": 0, "dst": band,
                         "count": r * wl * c, "param": up.lut})
        for v, (vop, param, *operands) in enumerate(vops):
            a, b = operands[0] if operands else ((0, 1) if v == 0 else (PREV, 1))
            if vop not in (VecOp.ADD, VecOp.MUL):
                b = None
            if PREV in (a, b) and v == 0:
                raise ProgramError("the first vector op has no result to read")
            if k not in (a, b):
                vecs.append({"vop": vop, "src": dst if a == PREV else bank + offs[a],
                             "src2": 0 if b is None else dst if b == PREV else bank + offs[b],
                             "cols": c if broadcast and b == 1 else 0, "dst": dst,
                             "count": f * n * c, "param": param})
                continue
            if broadcast and 1 in (a, b):
                raise ProgramError("an upsampled operand with a broadcast one")
            reads = [o for o in (a, b) if o is not None]
            base = {o: band if o == k else dst if o == PREV else bank + offs[o] for o in reads}
            # phase dx's output row y (of the chunk) reads band row y // f
            for dx, y in ((dx, y) for dx in range(f) for y in range(f * r)):
                at_y = {o: base[o] + ((y // f) * wl if o == k else dx * n + y * wl) * c
                        for o in reads}
                vecs.append({"vop": vop, "src": at_y[a], "src2": at_y.get(b, 0), "cols": 0,
                             "dst": dst + (dx * n + y * wl) * c, "count": wl * c,
                             "param": param})
        for v, fields in enumerate(vecs):
            first, last = v == 0, v == len(vecs) - 1
            deps = ((("pop_prev",) + (("pop_next",) if i >= 2 else ())) if first else ()) + \
                (((("push_prev",) if more else ()) + ("push_next",)) if last else ())
            prog.append(make(Op.VEC, deps, **fields))
        for dx in range(f):
            deps = (("pop_prev",) if dx == 0 else ()) + \
                (("push_prev",) if more and dx == f - 1 else ())
            prog.append(make(Op.STORE, deps, space=out[0],
                             dram=out[1] + (f * y0 * w + dx) * pitch, sram=dst + dx * n * c,
                             rows=1, cols=n, depth=c, stride=0, pitch=f * pitch))
    return prog


def maxpool_layer(cfg: NpuConfig, h: int, w: int, c: int, k: int, stride: int,
                  pad: tuple[int, int, int, int], inp: Loc, out: Loc, param: int,
                  lut: int | None = None, sync: bool = True) -> tuple[list[Instr], np.ndarray]:
    """Max pool (square window) by bands of output rows; returns (program, param words).

    The parameter words are one ``pool_block`` per distinct band height, to be placed at
    ``param``; ``lut``: PCACHE address of a LUT applied to the pooled values.
    """
    pt, pl, pb, pr = pad
    wp = w + pl + pr
    oh = (h + pt + pb - k) // stride + 1
    ow = (wp - k) // stride + 1
    rows_b = 0
    for rows in range(1, oh + 1):
        in_rows = (rows - 1) * stride + k
        if in_rows * wp * c + rows * ow * c > cfg.activation_bank or rows * ow > 2047:
            break
        rows_b = rows
    if rows_b == 0:
        raise ProgramError(f"max pool: one output row of {ow}x{c} does not fit a bank")
    nb = math.ceil(oh / rows_b)
    rows_b = math.ceil(oh / nb)
    heights = sorted({min(rows_b, oh - b * rows_b) for b in range(nb)})
    blocks = {r: pool_block((r - 1) * stride + k, wp, c, k, stride) for r in heights}
    offsets, words, off = {}, [], 0
    for r in heights:
        blk = blocks[r]
        offsets[r] = off
        words.append(blk)
        off += 4 * blk.size
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    for b in range(nb):
        oy0 = b * rows_b
        orows = min(rows_b, oh - oy0)
        bank = (b % 2) * cfg.activation_bank
        more = b + 2 < nb
        y_lo = oy0 * stride - pt
        y_hi = (oy0 + orows - 1) * stride + k - pt
        top, bottom = max(0, -y_lo), max(0, y_hi - h)
        in_rows = y_hi - y_lo
        tile = in_rows * wp * c
        prog += act_loads((("pop_next",) if b >= 2 else ()), ("push_next",), inp[0],
                          inp[1] + max(0, y_lo) * w * c, bank, in_rows - top - bottom, w, c,
                          w * c, (top, bottom, pl, pr), -128)
        n = orows * ow * c
        tail = (("push_prev",) if more else ()) + ("push_next",)
        head = ("pop_prev",) + (("pop_next",) if b >= 2 else ())
        prog.append(make(Op.VEC, head + (() if lut is not None else tail), vop=VecOp.MAXPOOL,
                         src=bank, dst=bank + tile, count=n * k * k,
                         param=param + offsets[orows]))
        if lut is not None:
            prog.append(make(Op.VEC, tail, vop=VecOp.LUT, src=bank + tile, dst=bank + tile,
                             count=n, param=lut))
        prog.append(make(Op.STORE, ("pop_prev",) + (("push_prev",) if more else ()),
                         space=out[0], dram=out[1] + oy0 * ow * c, sram=bank + tile,
                         rows=orows * ow, cols=1, depth=c, stride=c))
    return prog, np.concatenate(words).astype(np.int32)


@dataclass(frozen=True)
class Chunk:
    """One pass through a bank: LOAD ``rows`` x ``cols`` pixels of ``depth`` bytes (DRAM
    row stride ``stride``) into the bank's lower half, one VEC (a LUT, or a CLAMP copy)
    over them into its upper half, then STOREs of (SRAM offset in that half, DRAM
    address, runs, run stride, pixels per run[, pitch]): each writes ``runs`` runs of
    that many pixels of ``depth`` bytes, ``run_stride`` apart (and within a run
    ``pitch`` apart; 0: abutting). ``copies``: instead of the one VEC, several, each
    (source offset in the lower half, offset in the upper half, elements)."""

    src: Loc
    rows: int
    cols: int
    depth: int
    stride: int
    vop: tuple[VecOp, int]
    stores: list[tuple[int, ...]]
    copies: tuple[tuple[int, int, int], ...] = ()


def stream_chunks(cfg: NpuConfig, chunks: list[Chunk], out_space: Space,
                  sync: bool = True, then: list[Chunk] | None = None) -> list[Instr]:
    """Chunks through the two banks with VTA's double buffering (``elementwise_layer``'s
    token protocol), one index across all chunks so no bank is reused early.

    ``then``: chunks that read what ``chunks`` stored. A token relay orders them without
    a SYNC (one SYNC per layer keeps the report's per-layer sections): the last store
    of the first pass pushes to the compute queue, a CFG there (1 cycle, no other
    effect) waits for it and pushes to the load queue, and the second pass's first LOAD
    waits for that. Stores run in order, so every store of the first pass is done."""
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    prog += _stream(cfg, chunks, out_space, wait=False, signal=bool(then))
    if then:
        prog.append(make(Op.CFG, ("pop_next", "push_prev")))
        prog += _stream(cfg, then, out_space, wait=True, signal=False)
    return prog


def _stream(cfg: NpuConfig, chunks: list[Chunk], out_space: Space, wait: bool,
            signal: bool) -> list[Instr]:
    """One pass of ``stream_chunks``; ``wait``: the first LOAD pops the relay's token,
    ``signal``: the last STORE pushes one to the compute queue."""
    prog: list[Instr] = []
    n = len(chunks)
    half = cfg.activation_bank // 2
    for i, ch in enumerate(chunks):
        bank = (i % 2) * cfg.activation_bank
        size = ch.rows * ch.cols * ch.depth
        copies = ch.copies or ((0, 0, size),)
        if max(size, *(d + n for _, d, n in copies)) > half:
            raise ProgramError(f"a chunk of {size} B and its copy do not fit an activation "
                               f"bank ({cfg.activation_bank} B)")
        more = i + 2 < n
        prog += act_loads((("pop_next",) if i >= 2 or (wait and i == 0) else ()),
                          ("push_next",), ch.src[0], ch.src[1], bank, ch.rows, ch.cols,
                          ch.depth, ch.stride, (0, 0, 0, 0), 0)
        # the copy always goes to the bank's upper half: chunks differ in size (concat's
        # inputs), and load(i+2) waits for compute(i) only, not for store(i)
        dst = bank + half
        vop, param = ch.vop
        for k, (s_off, d_off, count) in enumerate(copies):
            first, last = k == 0, k == len(copies) - 1
            deps = ((("pop_prev",) + (("pop_next",) if i >= 2 else ())) if first else ()) + \
                (((("push_prev",) if more else ()) + ("push_next",)) if last else ())
            prog.append(make(Op.VEC, deps, vop=vop, src=bank + s_off, dst=dst + d_off,
                             count=count, param=param))
        for j, (off, dram, runs, run_stride, cols, *pitch) in enumerate(ch.stores):
            last = j == len(ch.stores) - 1
            push = last and (more or (signal and i == n - 1))
            prog.append(make(Op.STORE, (("pop_prev",) if j == 0 else ()) +
                             (("push_prev",) if push else ()), space=out_space,
                             dram=dram, sram=dst + off, rows=runs, cols=cols,
                             depth=ch.depth, stride=run_stride if runs > 1 else 0,
                             pitch=pitch[0] if pitch else 0))
    return prog


def resize_layer(cfg: NpuConfig, h: int, w: int, c: int, f: int, inp: Loc, out: Loc,
                 vop: tuple[VecOp, int], copy: tuple[VecOp, int] | None = None,
                 sync: bool = True, pitch: int | None = None) -> list[Instr]:
    """Nearest-neighbour upsampling by an integer ``f`` of an HWC tensor (output pixel
    (f y + dy, f x + dx) is input pixel (y, x), ONNX's asymmetric / floor nearest).

    Bands of input rows are copied (or mapped through a LUT when the scales differ) and
    stored into output rows f y + dy, one DMA per (dy, dx) for the whole band (rows f
    output rows apart, pixels ``f`` apart: a pitched STORE, one cycle per pixel on chip).
    With ``copy`` (a CLAMP copy's parameters) and an on-chip output, a second pass may
    instead store only dy = 0 and then read those rows back, whole, and store each
    ``f - 1`` more times as contiguous rows: fewer pixel runs for large ``f`` and few
    channels, more bytes moved. The program of fewer simulated cycles is taken, with
    the largest bands or bands half as high (more overlap of load, copy and store).
    When the output rows are too long for a DMA stride, rows are stored one by one (and
    read back one by one). ``pitch``: output pixels are that many bytes apart (a slice
    of a concat's channels; no read-back, which copies whole rows)."""
    px = pitch or c
    if c > MAX_RUN or w > MAX_RUN or f * px >= 1 << 14:
        raise ProgramError(f"resize of {h}x{w}x{c} by {f}: rows or channels exceed a DMA field")
    if 2 * w * c > cfg.activation_bank:
        raise ProgramError(f"one row of {w}x{c} and its copy do not fit an activation bank")
    half = cfg.activation_bank // 2
    ow = w * f
    row = ow * px  # one output row, bytes
    rows = min(h, half // (w * c))
    # a band's rows in one STORE per (dy, dx) when the DRAM row step (f output rows)
    # fits the 14-bit stride; else one STORE per row (its pixels as one-pixel runs)
    banded = f * row < 1 << 14
    # rows are re-read from the output: on chip only (over the host link the read-back
    # would cost more than it saves)
    twos = [False] + ([True] if copy is not None and f > 1 and out[0] == Space.PCACHE
                      and ow <= MAX_RUN and row <= half and px == c else [])
    if banded:
        rows = min(rows, MAX_RUN)
    bands = math.ceil(h / rows)
    # the largest bands, or twice as many (rows stored one by one: the largest)
    heights = {rows, math.ceil(h / (2 * bands))} if banded else {rows}
    progs = [_resize(cfg, h, w, c, f, inp, out, vop, copy if two else None, sync, r, banded,
                     px) for two in twos for r in sorted(heights)]
    # each input row copied f times in the bank, then one STORE per dx of all a band's
    # output rows (consecutive, one output row apart): f STOREs a band, where a band's
    # (dy, dx) STOREs need the DRAM step of f output rows to fit the stride field
    rep = min(h, half // (f * w * c), MAX_RUN // f)
    if f > 1 and rep and replicable(w, f, px):
        progs += [_replicated(cfg, h, w, c, f, inp, out, vop, sync, r, px)
                  for r in sorted({rep, math.ceil(h / (2 * math.ceil(h / rep)))})]
    if len(progs) == 1:
        return progs[0]
    return min(progs, key=lambda p: simulate(cfg, p + [make(Op.END)]).cycles)


def replicable(w: int, f: int, px: int) -> bool:
    """Whether a resize by ``f`` of rows of ``w`` pixels, stored ``px`` bytes apart, fits
    the STORE fields as whole output rows (``_replicated``)."""
    return w <= MAX_RUN and w * f * px < 1 << 14 and f * px < 1 << 14


def _replicated(cfg: NpuConfig, h: int, w: int, c: int, f: int, inp: Loc, out: Loc,
                vop: tuple[VecOp, int], sync: bool, rows: int, px: int) -> list[Instr]:
    """A ``resize_layer`` program of bands of ``rows`` input rows, each row copied (or
    mapped) ``f`` times into the bank's upper half, so that the band's output rows are
    ``rows * f`` consecutive runs: one STORE per dx (pixels ``f * px`` apart)."""
    ow = w * f
    row = ow * px
    wc = w * c
    chunks = []
    for y0 in range(0, h, rows):
        r = min(rows, h - y0)
        copies = tuple((y * wc, (y * f + dy) * wc, wc) for y in range(r) for dy in range(f))
        stores = [(0, out[1] + (y0 * f * ow + dx) * px, r * f, row, w, f * px)
                  for dx in range(f)]
        chunks.append(Chunk((inp[0], inp[1] + y0 * wc), r, w, c, wc, vop, stores, copies))
    return stream_chunks(cfg, chunks, out[0], sync)


def _resize(cfg: NpuConfig, h: int, w: int, c: int, f: int, inp: Loc, out: Loc,
            vop: tuple[VecOp, int], copy: tuple[VecOp, int] | None, sync: bool,
            rows: int, banded: bool, px: int) -> list[Instr]:
    """One ``resize_layer`` program: bands of ``rows`` input rows; with ``copy``, the
    second pass stores dy > 0; output pixels ``px`` bytes apart."""
    ow = w * f
    row = ow * px
    dys = range(1) if copy is not None else range(f)
    chunks = []
    for y0 in range(0, h, rows):
        r = min(rows, h - y0)
        if banded:
            stores = [(0, out[1] + ((y0 * f + dy) * ow + dx) * px, r, f * row, w, f * px)
                      for dy in dys for dx in range(f)]
        else:
            stores = [((y - y0) * w * c, out[1] + ((y * f + dy) * ow + dx) * px, w, f * px, 1)
                      for y in range(y0, y0 + r) for dy in dys for dx in range(f)]
        chunks.append(Chunk((inp[0], inp[1] + y0 * w * c), r, w, c, w * c, vop, stores))
    then = []
    if copy is not None and not banded:  # each output row f y read back alone
        then = [Chunk((out[0], out[1] + f * y * row), 1, ow, c, row, copy,
                      [(0, out[1] + (f * y + dy) * row, 1, row, ow) for dy in range(1, f)])
                for y in range(h)]
    elif copy is not None:
        rows2 = min(h, cfg.activation_bank // 2 // row)
        for y0 in range(0, h, rows2):
            r = min(rows2, h - y0)
            then.append(Chunk((out[0], out[1] + f * y0 * row), r, ow, c, f * row, copy,
                              [(0, out[1] + (f * y0 + dy) * row, r, f * row, ow)
                               for dy in range(1, f)]))
    return stream_chunks(cfg, chunks, out[0], sync, then)


def concat_layer(cfg: NpuConfig, pixels: int, channels: list[int], inputs: list[Loc],
                 out: Loc, vops: list[tuple[VecOp, int] | None], sync: bool = True
                 ) -> list[Instr]:
    """Concatenation along channels of HWC tensors with the same pixels: each input is
    copied (or mapped through its LUT to the output's scale) in chunks of pixels and
    stored at its channel offset, one run per pixel, the output's channels apart. An
    input whose ``vops`` entry is None was written in place by its producer; with none
    left to copy the layer has no program."""
    total = sum(channels)
    if max(channels) > MAX_RUN or total >= 1 << 14:
        raise ProgramError(f"concat of {channels} channels exceeds a DMA field")
    chunks, off = [], 0
    for (space, addr), c, vop in zip(inputs, channels, vops):
        if vop is None:
            off += c
            continue
        per = min(cfg.activation_bank // (2 * c), MAX_RUN)
        if per == 0:
            raise ProgramError(f"one pixel of {c} channels and its copy do not fit a bank")
        for p0 in range(0, pixels, per):
            pix = min(per, pixels - p0)
            chunks.append(Chunk((space, addr + p0 * c), pix, 1, c, c, vop,
                                [(0, out[1] + p0 * total + off, pix, total, 1)]))
        off += c
    return stream_chunks(cfg, chunks, out[0], sync) if chunks else []
