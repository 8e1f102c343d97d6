"""Layer-level program generator: conv / depthwise / GEMM / add / pool -> instructions.

A conv is a GEMM through implicit im2col: M = output pixels, K = kh*kw*cin, N = cout.
Depthwise is block-diagonal: channel groups of g <= C_array, each a GEMM with
K = kh*kw*g and N = g whose off-diagonal weights are zero; the array runs the whole
block (so timing is the dense GEMM's), but only the diagonal is stored (GEMM ``diag``)
and all-zero blocks between groups are skipped.

Pixel packing (``Conv.pack`` g, ``Conv.on_array``): g adjacent output pixels per array
pass, for convs with few output channels (g * cout columns) and depthwise convs
(groups of cols // g channels, each channel's taps in g shifted columns, GEMM
``lanes``; a STORE with a pitch scatters the pixels back to their channels).

Tiling: the output is cut into bands of whole output rows so one band's input tile and
int8 output fit an activation bank and its accumulators (band pixels x N-tile int32)
fit the accumulator SRAM. Bands alternate banks; tokens give VTA's double buffering:
load(b+2) waits for compute(b) to release the bank, compute(b+2) waits for store(b).
WS folds stream the band's pixels through K-rows x N-cols of weights; OS folds keep a
R-pixel x N-col output tile in the array and stream K.

Streamed weights (``Placement.stream_from``): one 2-D DMA per N-tile (K x nl column
block of the host's K x N matrix, split every 2047 rows) into a tile-major staging
area; band 0's first GEMM of tile t pops that tile's token, so tile t+1 streams while
tile t computes. Later bands reuse the staged weights (each weight crosses the link
once per inference).

Layouts: activations HWC int8; conv weights as the K x N matrix (row k = (i, j, c));
depthwise groups' block-diagonal matrices one after another; requant parameter
blocks (``isa.requant_block``) one per N-tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from edgec.errors import EdgecError

from . import timing
from .config import NpuConfig
from .isa import (
    ADD_KEYS,
    POOL_KEYS,
    Dataflow,
    Instr,
    Kind,
    Op,
    Space,
    VecOp,
    keyed_block,
    make,
    requant_block,
)

MAX_RUN = 2047  # the DMA's 11-bit rows / depth fields: the longest run one descriptor moves
ALIGN = 64  # bytes: buffers start on a 64-byte boundary (one activation-feed beat)


class ProgramError(EdgecError):
    """A layer does not fit the machine or the generator's tiling."""


@dataclass(frozen=True)
class Conv:
    """A conv layer's shape; ``pad`` is (top, left, bottom, right).

    ``stride`` is the horizontal stride (and the vertical one unless ``stride_h`` is set,
    as for the (2, 1) strides of PP-OCR's text-line nets).

    ``phases`` p > 1: a transposed conv whose kernel equals its stride p (no overlap, no
    padding), run as this 1x1 conv with ``cout`` = p * p * channels in (i, j, c) order;
    input pixel (y, x)'s output (i, j, c) is the transposed conv's output pixel
    (p*y + i, p*x + j), channel c. Output row phase i is an N-tile of p * channels
    columns whose bytes are, per input row, one contiguous run of the output row p*y + i,
    so a band stores each phase with one DMA. Packed (``pack`` g), the array conv's
    columns are in (i, q, j, c) order: phase i's N-tile holds, per array pixel x', the
    bytes of output pixels p*(g*x' + q) + j, one contiguous run again.

    ``pack`` g > 1: the array computes g horizontally adjacent output pixels at once
    (``on_array``), so a conv with few output channels fills g times as many columns.
    The layer, its weights as given and its ``macs`` stay this conv's.
    """

    h: int
    w: int
    cin: int
    cout: int
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    depthwise: bool = False
    stride_h: int = 0  # 0: same as ``stride``
    phases: int = 1
    pack: int = 1

    @property
    def sh(self) -> int:
        return self.stride_h or self.stride

    @property
    def channels(self) -> int:
        """Channels of the layer's output tensor (``cout`` unless transposed)."""
        return self.cout // (self.phases * self.phases)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """The layer's output tensor, HWC."""
        p = self.phases
        return (self.out_h * p, self.out_w * p, self.channels)

    @property
    def out_h(self) -> int:
        return (self.h + self.pad[0] + self.pad[2] - self.kh) // self.sh + 1

    @property
    def out_w(self) -> int:
        return (self.w + self.pad[1] + self.pad[3] - self.kw) // self.stride + 1

    def on_array(self) -> Conv:
        """The conv the array runs. With ``pack`` g: output pixels g*x' + q (q < g) are
        one pixel x' of a conv with kernel kh x (kw + (g-1)*s), x stride g*s, the same y
        stride and g*cout output channels in (q, c) order whose filter (q, c) is filter c
        shifted right by q*s taps (zero elsewhere). Its HWC output has the same bytes as
        this conv's, so bands, stores and the layer's neighbours do not change; the
        array streams g times fewer pixels through one weight fold.

        A depthwise conv keeps ``depthwise`` and ``pack`` on the array: the window and
        strides widen the same way, and each group of cols // g channels is one GEMM
        with g columns per channel, (q, c) order (``n_tiles``), whose weight expander
        places each compact tap in its g shifted columns (GEMM ``lanes``) and whose
        output pixels a STORE scatters with a pitch."""
        g = self.pack
        if g == 1:
            return self
        wide = replace(self, kw=self.kw + (g - 1) * self.stride, stride=g * self.stride,
                       stride_h=self.sh)
        return wide if self.depthwise else replace(wide, cout=g * self.cout, pack=1)

    @property
    def macs(self) -> int:
        """Useful MACs (depthwise: one channel per filter); a packed conv's are those of
        the conv it computes, not of the zero-padded filters the array runs."""
        per = self.kh * self.kw * (1 if self.depthwise else self.cin)
        return self.out_h * self.out_w * self.cout * per


@dataclass(frozen=True)
class Placement:
    """Where a layer's tensors live. Activations: (space, byte address)."""

    inp: tuple[Space, int]
    out: tuple[Space, int]
    wgt: int            # PCACHE address of the packed weights
    params: int         # PCACHE address of the requant blocks
    zp_in: int = 0      # padding value
    stream_from: int | None = None  # HOST address of packed weights if streamed
    # a per-channel scale applied to the input first: (where its cin bytes are, PCACHE
    # address of the MUL block); see ``conv2d_layer``
    scale: tuple[tuple[Space, int], int] | None = None
    # a tensor of the output's shape added to the result: (where it is, PCACHE address
    # of the ADD block whose first operand is the conv's output)
    residual: tuple[tuple[Space, int], int] | None = None


@dataclass
class LayerProgram:
    instrs: list[Instr]
    macs: int
    bands: int
    folds: int          # folds of the whole layer (SCALE-Sim's count, without bands)
    dataflow: Dataflow
    weight_bytes: int
    notes: dict[str, int] = field(default_factory=dict)


# -- packing ---------------------------------------------------------------------------
def groups(conv: Conv, cols: int) -> list[tuple[int, int]]:
    """(first channel, size) of each depthwise group (``cols // pack`` channels); one
    group for a dense conv."""
    if not conv.depthwise:
        return [(0, conv.cin)]
    size = cols // conv.pack
    return [(c, min(size, conv.cin - c)) for c in range(0, conv.cin, size)]


def tile_k(conv: Conv, nl: int) -> int:
    """K (window rows) of an N-tile ``nl`` columns wide of the array conv ``conv``."""
    return conv.kh * conv.kw * (nl // conv.pack if conv.depthwise else conv.cin)


def pixel_packed(conv: Conv, w: np.ndarray) -> np.ndarray:
    """OHWI weights of ``conv`` -> those of ``conv.on_array()``: filter (q, c) is filter
    c placed q*stride taps to the right in the wider window (a transposed conv's:
    filter (i, q, j, c) is filter (i, j, c) so placed)."""
    g, s, a, p = conv.pack, conv.stride, conv.on_array(), conv.phases
    per = w.reshape(p, conv.cout // p, conv.kh, conv.kw, conv.cin)  # by output row phase
    out = np.zeros((p, g, conv.cout // p, conv.kh, a.kw, conv.cin), dtype=w.dtype)
    for q in range(g):
        out[:, q, :, :, q * s:q * s + conv.kw, :] = per
    return out.reshape(a.cout, conv.kh, a.kw, conv.cin)


def pack_error(cfg: NpuConfig, conv: Conv) -> str | None:
    """Why ``conv.pack`` cannot run on ``cfg`` (None if it can)."""
    g = conv.pack
    if g == 1:
        return None
    if g < 1 or conv.out_w % g:
        return f"{conv.out_w} output pixels per row are not a multiple of the pack {g}"
    a = conv.on_array()
    if conv.depthwise and g > cfg.cols:
        return f"{g} packed pixels exceed the {cfg.cols}-column array"
    # a transposed conv's N-tile is one output row phase
    if not conv.depthwise and a.cout // conv.phases > cfg.cols:
        return (f"{g} x {conv.cout // conv.phases} packed channels exceed the "
                f"{cfg.cols}-column array")
    if a.kw > 15 or a.stride > 7:  # the CFG's 4-bit kw and 3-bit stride
        return f"packed window {a.kw} wide with stride {a.stride} does not fit the CFG"
    return None


MIN_GROUP = 16


def packs(cfg: NpuConfig, conv: Conv) -> list[int]:
    """The packs ``conv`` can run with on ``cfg`` (1 always). A depthwise group keeps
    at least ``MIN_GROUP`` channels (or all of them): its STORE moves one pixel's group
    per cycle."""
    most = (cfg.cols // min(MIN_GROUP, conv.cin) if conv.depthwise
            else cfg.cols // max(1, conv.cout // conv.phases))
    return [g for g in range(1, max(1, most) + 1)
            if g == 1 or not pack_error(cfg, replace(conv, pack=g))]


def pack_weights(conv: Conv, w: np.ndarray, cols: int) -> np.ndarray:
    """OHWI weights (depthwise: C x kh x kw) -> the int8 bytes the program reads."""
    if conv.pack > 1 and not conv.depthwise:
        return pack_weights(conv.on_array(), pixel_packed(conv, w), cols)
    if not conv.depthwise:
        return np.ascontiguousarray(w.reshape(conv.cout, -1).T).astype(np.int8).reshape(-1)
    # depthwise: per group, one weight per k = (i, j, c), expanded by GEMM ``diag``
    # (a packed group's g lanes read the same taps)
    return np.concatenate([np.ascontiguousarray(w[c0:c0 + g].transpose(1, 2, 0))
                           .astype(np.int8).reshape(-1) for c0, g in groups(conv, cols)])


def n_tiles(conv: Conv, cols: int) -> list[tuple[int, int]]:
    """(first output channel, width in columns) of each N-tile (a depthwise group is one,
    ``pack`` columns per channel; a transposed conv has one per output row phase)."""
    if conv.depthwise:
        return [(c0, conv.pack * n) for c0, n in groups(conv, cols)]
    if conv.phases > 1:
        width = conv.phases * conv.channels
        if width > cols:
            raise ProgramError(f"transposed conv with {conv.channels} channels and stride "
                               f"{conv.phases}: an output row phase ({width} columns) is "
                               f"wider than the {cols}-column array")
        return [(i * width, width) for i in range(conv.phases)]
    return [(n, min(cols, conv.cout - n)) for n in range(0, conv.cout, cols)]


def pack_requant(conv: Conv, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                 zp: int, qmin: int, qmax: int, cols: int) -> np.ndarray:
    """Per-channel (or scalar) requant parameters -> one block per N-tile (a packed
    conv's channels repeat once per packed pixel)."""
    full = [np.broadcast_to(np.asarray(v), (conv.cout,)) for v in (bias, mult, shift)]
    return np.concatenate([requant_block(*(v[ch] for v in full), zp, qmin, qmax)
                           for ch in column_channels(conv, cols)])


def column_channels(conv: Conv, cols: int) -> list[np.ndarray]:
    """For each N-tile of ``conv`` on the array, the layer channel of each column."""
    tiles = n_tiles(conv.on_array(), cols)
    if conv.pack > 1 and conv.depthwise:
        return [np.tile(np.arange(c0, c0 + nl // conv.pack), conv.pack) for c0, nl in tiles]
    if conv.pack > 1 and conv.phases > 1:  # phase i's tile: (q, j, c) columns
        run = conv.cout // conv.phases
        return [np.tile(np.arange(i * run, (i + 1) * run), conv.pack) for i in range(len(tiles))]
    return [np.arange(n0, n0 + nl) % conv.cout for n0, nl in tiles]


# -- conv / GEMM -----------------------------------------------------------------------
def buffer_bytes(cfg: NpuConfig, buffers: int = 2) -> int:
    """Bytes of each of ``buffers`` equal buffers the activation banks are cut into."""
    return cfg.activation_bank * cfg.activation_banks // buffers


def band_bytes(cfg: NpuConfig, conv: Conv, rows: int) -> tuple[int, int]:
    """(input, output) bytes of a band of ``rows`` output rows of the array conv ``conv``
    (``Conv.on_array``): its padded input rows, and its int8 results over all N-tiles."""
    rows = min(rows, conv.out_h)
    wp = conv.w + conv.pad[1] + conv.pad[3]
    px = sum(nl for _, nl in n_tiles(conv, cfg.cols))  # output bytes per array pixel
    return ((rows - 1) * conv.sh + conv.kh) * wp * conv.cin, rows * conv.out_w * px


def max_band_rows(cfg: NpuConfig, conv: Conv, acc_words: int | None = None,
                  scale: bool = False, residual: bool = False) -> int:
    """Most output rows per band that fit the bank and the accumulators (``acc_words``
    of them; default all). A fused input ``scale`` keeps its cin bytes at the bank's end;
    a fused ``residual`` needs a second output-sized area for its tiles."""
    acc_words = cfg.accumulator_words if acc_words is None else acc_words
    reserve = conv.cin if scale else 0
    out_copies = 2 if residual else 1
    ow = conv.out_w
    n_max = max(nl for _, nl in n_tiles(conv, cfg.cols))
    best = 0
    for rows in range(1, conv.out_h + 1):
        inp, out = band_bytes(cfg, conv, rows)
        out *= out_copies
        # 2047: the 11-bit DMA row count of the band's STORE
        if (inp + out + reserve > cfg.activation_bank or rows * ow * n_max > acc_words
                or rows * ow > 2047):
            break
        best = rows
    if best == 0:
        raise ProgramError(f"conv {conv}: one output row does not fit an activation bank "
                           f"({cfg.activation_bank} B) and the accumulators")
    return best


def _band_rows(cfg: NpuConfig, conv: Conv, rows: int | None = None, scale: bool = False,
               residual: bool = False) -> int:
    """Output rows per band: ``rows`` if given (at most what fits), else the most that
    fit (with a vector queue, the most whose N-tile fits half the accumulators, so
    requantizing one tile overlaps the next tile's folds), evened out so the last band
    is not a sliver."""
    best = max_band_rows(cfg, conv, scale=scale, residual=residual)
    if rows is not None:
        if not 1 <= rows <= best:
            raise ProgramError(f"conv {conv}: {rows} output rows per band; 1 to {best} fit")
        return rows
    if cfg.vector_queue:
        try:
            best = max_band_rows(cfg, conv, cfg.accumulator_words // 2, scale, residual)
        except ProgramError:
            pass  # one row's N-tile needs more than half: no double buffering
    nb = math.ceil(conv.out_h / best)
    return math.ceil(conv.out_h / nb)  # even bands: the last is not a sliver


def default_band_rows(cfg: NpuConfig, conv: Conv, place: Placement) -> int:
    """The output rows per band ``conv2d_layer`` picks for ``conv`` (as given) at ``place``
    when no ``band_rows`` is given."""
    return _band_rows(cfg, conv.on_array(), None, place.scale is not None,
                      place.residual is not None)


def fold_cost(cfg: NpuConfig, conv: Conv, df: Dataflow) -> int:
    """Stall-free fold cycles of ``conv`` as the array runs it, with the default bands
    (a WS fold refills once per band)."""
    a = conv.on_array()
    rows_b = _band_rows(cfg, a)
    total = 0
    for oy0 in range(0, a.out_h, rows_b):
        m = min(rows_b, a.out_h - oy0) * a.out_w
        for _, nl in n_tiles(a, cfg.cols):
            k = tile_k(a, nl)
            total += (math.ceil(k / cfg.rows) * timing.fold_cycles(cfg, df, m)
                      if df == Dataflow.WS else
                      math.ceil(m / cfg.rows) * timing.fold_cycles(cfg, df, k))
    return total


def choose_pack(cfg: NpuConfig, conv: Conv) -> int:
    """The pack (``Conv.pack``) with the fewest fold cycles in its better dataflow; 1
    when packing does not pay or the conv cannot pack. Packing pays for convs with few
    output channels: g pixels per fold fill g times the columns and stream g times
    fewer rows, for a window (kw + (g-1)*s) / kw times as deep."""
    costs = pack_costs(cfg, conv)
    return min(costs, key=lambda g: (costs[g], g), default=1)


def pack_costs(cfg: NpuConfig, conv: Conv) -> dict[int, int]:
    """Fold cycles (``fold_cost``, the better dataflow) of each pack ``conv`` can run
    with; a pack whose bands do not fit is left out."""
    costs = {}
    for g in packs(cfg, conv):
        try:
            costs[g] = min(fold_cost(cfg, replace(conv, pack=g), df)
                           for df in (Dataflow.WS, Dataflow.OS))
        except ProgramError:
            continue
    return costs


def choose_dataflow(cfg: NpuConfig, conv: Conv) -> Dataflow:
    """The dataflow with fewer stall-free fold cycles (the tuner will refine this)."""
    return min((Dataflow.WS, Dataflow.OS), key=lambda df: fold_cost(cfg, conv, df))


def conv2d_layer(cfg: NpuConfig, conv: Conv, place: Placement,
                 dataflow: Dataflow | str | None = None, lut: int | None = None,
                 sync: bool = True, band_rows: int | None = None,
                 order: str = "band") -> LayerProgram:
    """Instructions for one conv (or depthwise) layer with requantization.

    ``lut``: PCACHE address of a LUT block applied after requantization. With
    ``place.scale`` (a conv without padding whose input is ``x * s``, s one pixel of
    cin channels: squeeze-excite's scale) each band is loaded as x, s after it at the
    bank's end, and a VEC MUL (``cols`` = cin, the vector unit repeats s) makes the
    band x * s in place before its GEMMs read it. With ``place.residual`` each output
    tile is added to the same tile of another tensor (loaded beside it) by a VEC ADD
    before the store: a residual connection. ``band_rows``:
    output rows per band (fewer rows: more bands, so loads overlap compute, but shorter
    WS folds); default the most that fit. ``order``: "band" (each band's N-tiles in
    turn, one input load per band) or "tile" (each N-tile over all bands, reloading
    them; the first results leave sooner).
    """
    if order not in ("band", "tile"):
        raise ProgramError(f"loop order {order!r}: expected band or tile")
    why = pack_error(cfg, conv)
    if why:
        raise ProgramError(f"conv {conv}: {why}")
    layer, conv = conv, conv.on_array()
    if place.scale is not None and any(conv.pad):
        raise ProgramError(f"conv {conv}: an input scale needs a conv without padding (the "
                           "DMA pads with the scaled input's zero point)")
    if long_k(conv):
        if place.scale is not None:
            raise ProgramError(f"conv {conv}: no input scale on a one-pixel long-K conv")
        return long_k_layer(cfg, conv, place, dataflow, lut, sync)
    if conv.depthwise and conv.cin != conv.cout:
        raise ProgramError(f"depthwise conv needs cin == cout, got {conv.cin}, {conv.cout}")
    p = conv.phases
    if p > 1 and (layer.depthwise or layer.kh * layer.kw != 1 or layer.stride != 1
                  or layer.cout % (p * p)):
        raise ProgramError(f"transposed conv {conv}: expected a 1x1 stride-1 dense conv "
                           f"with cout a multiple of {p * p}")
    # one output row of a transposed conv in bytes; a band's phase i lands every p rows
    out_row = p * conv.out_w * conv.channels
    if p > 1 and (p * out_row >= 1 << 14 or conv.out_w > MAX_RUN):
        raise ProgramError(f"transposed conv {conv}: its output rows ({out_row} B) are too "
                           "long for the STORE's 14-bit stride or 11-bit pixel count")
    q = conv_queues(cfg, layer, place, dataflow, lut, band_rows, order)
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    # Queues are independent streams; interleave them so a reader sees the band order.
    prog += _interleave(q.load, q.compute, q.store)
    return LayerProgram(prog, layer.macs, q.bands, q.folds, q.dataflow, q.weight_bytes,
                        {"band_rows": q.band_rows, "param_bytes": q.param_bytes})


@dataclass
class ConvQueues:
    """A conv layer's three instruction queues before interleaving, and where each of its
    steps (one band, or one band's N-tile in tile order) starts in them (``marks``)."""

    load: list[Instr]
    compute: list[Instr]
    store: list[Instr]
    marks: list[tuple[int, int, int]]
    bands: int
    band_rows: int
    folds: int
    dataflow: Dataflow
    weight_bytes: int
    param_bytes: int
    tile_max: int  # bytes at each bank's start its input bands may use; outputs above

    def step(self, i: int) -> tuple[list[Instr], list[Instr], list[Instr]]:
        """Step ``i``'s instructions on the load, compute and store queues."""
        ends = self.marks[i + 1] if i + 1 < len(self.marks) else (
            len(self.load), len(self.compute), len(self.store))
        lo = self.marks[i]
        return (self.load[lo[0]:ends[0]], self.compute[lo[1]:ends[1]],
                self.store[lo[2]:ends[2]])


def conv_queues(cfg: NpuConfig, layer: Conv, place: Placement,
                dataflow: Dataflow | str | None = None, lut: int | None = None,
                band_rows: int | None = None, order: str = "band",
                slots: list[tuple[int, int]] | None = None, reserve: int = 0,
                buffers: int = 2) -> ConvQueues:
    """``conv2d_layer``'s queues for a checked conv (``layer``, as given; not long-K).

    The step protocol is VTA's double buffering over a sequence of steps: step ``g``
    loads its band into bank ``g % 2``; its load (``g >= 2``) waits for the compute of
    step g - 2 to release that bank, its computes wait for its load and (``g >= 2``)
    for the stores of step g - 2; it releases the bank (g + 2 < n) for step g + 2.
    ``buffers`` V > 2 cuts the banks into V equal buffers and runs the same protocol
    with V for 2: V - 1 steps may be in flight beside one waiting on its load. ``slots``:
    per step, (g, n): its number in a sequence of n steps that other layers' steps fill
    in between (``cascade``); default its own steps, (0, n) to (n - 1, n). ``reserve``:
    bytes at each bank's start kept for input bands (outputs go above), so steps of
    layers with larger bands can follow this layer's in the same bank."""
    conv = layer.on_array()
    df = (choose_dataflow(cfg, conv) if dataflow is None
          else Dataflow[dataflow.upper()] if isinstance(dataflow, str) else dataflow)
    R = cfg.rows
    oh, ow, s, sh = conv.out_h, conv.out_w, conv.stride, conv.sh
    pt, pl, pr = conv.pad[0], conv.pad[1], conv.pad[3]
    wp = conv.w + pl + pr
    res = place.residual is not None
    if res and (conv.phases > 1 or (conv.depthwise and conv.pack > 1)):
        raise ProgramError(f"conv {conv}: a residual add needs the output tiles in the "
                           "output's own layout (no phases, no packed depthwise groups)")
    rows_b = _band_rows(cfg, conv, band_rows, place.scale is not None, res)
    p = conv.phases
    out_row = p * conv.out_w * conv.channels
    nbands = math.ceil(oh / rows_b)
    tiles = n_tiles(conv, cfg.cols)
    ks = [tile_k(conv, nl) for _, nl in tiles]
    # depthwise: each group's compact taps are one block (GEMM ``diag``; a packed
    # group's ``lanes`` read the same block, whole, so no per-fold weight offset);
    # dense: column n0 of the K x N matrix
    diag = int(conv.depthwise)
    lanes = conv.pack if conv.depthwise else 1  # output pixels per accumulator row
    lanes_field = lanes if lanes > 1 else 0  # GEMM ``lanes``: 0 is a plain GEMM
    px = sum(nl for _, nl in tiles)  # bytes of one accumulator row over all N-tiles
    taps = [layer.kh * layer.kw * (nl // lanes) for _, nl in tiles]  # a dw group's bytes
    wgt_off, block_off, off_w, off_p = [], [], 0, 0
    for (n0, nl), k, nt in zip(tiles, ks, taps):
        wgt_off.append(n0 if not conv.depthwise else off_w)
        off_w += nt if diag else k * nl
        block_off.append(off_p)
        off_p += 4 * (3 + 3 * nl)
    wbytes = off_w
    wgt_stride = [(0 if lanes > 1 else 1) if diag else conv.cout for _ in tiles]

    streamed = place.stream_from is not None
    wloads: list[list[Instr]] = [[] for _ in tiles]  # per N-tile
    if streamed:
        # Streamed weights arrive one N-tile at a time into the staging area, tile-major
        # (the 2-D DMA gathers a K x nl column block of the host's K x N matrix), and
        # each tile's last descriptor pushes a token that band 0's first GEMM of that
        # tile pops: tile t+1 streams while tile t computes (double buffering).
        for t, ((n0, nl), k) in enumerate(zip(tiles, ks)):
            size = taps[t]
            runs = (flat_runs(size, min(size, 2047)) if conv.depthwise else
                    [(r0, min(2047, k - r0), nl) for r0 in range(0, k, 2047)])
            for i, (r0, rows, depth) in enumerate(runs):
                src = wgt_off[t] + r0 if conv.depthwise else n0 + r0 * conv.cout
                dst = wgt_off[t] + r0 if conv.depthwise else k * n0 + r0 * nl
                wloads[t].append(make(Op.LOAD, ("push_next",) if i == len(runs) - 1 else (),
                                      kind=Kind.WGT, space=Space.HOST,
                                      dram=place.stream_from + src, sram=place.wgt + dst,
                                      rows=rows, cols=1, depth=depth,
                                      stride=depth if conv.depthwise else conv.cout))
            if not conv.depthwise:
                wgt_off[t], wgt_stride[t] = k * n0, nl
    in_space, in_addr = place.inp
    out_space, out_addr = place.out
    folds_total = 0
    load_q: list[Instr] = []
    comp_q: list[Instr] = []
    store_q: list[Instr] = []
    # A step loads one input band into a bank and computes some of its N-tiles: band
    # order runs every tile of a band per step (one load per band), tile order runs one
    # tile over every band (the band is loaded once per tile).
    steps = ([(b, list(range(len(tiles)))) for b in range(nbands)] if order == "band" else
             [(b, [t]) for t in range(len(tiles)) for b in range(nbands)])
    slots = [(g, len(steps)) for g in range(len(steps))] if slots is None else slots
    if len(slots) != len(steps):
        raise ProgramError(f"conv {conv}: {len(slots)} slots for {len(steps)} steps")
    # Two accumulator halves when a band's N-tile fits one: tile j+1's GEMMs then write
    # the other half while the vector unit still requantizes tile j (``hazards``).
    half = cfg.accumulator_words // 2
    double = rows_b * ow * max(nl for _, nl in tiles) <= half
    # outputs go above the largest input band in every bank: with tile order a full band's
    # load comes two steps after the short last band, while that band's stores may still
    # be reading (a load waits for the compute two steps back, not for its stores)
    band_in, band_out = band_bytes(cfg, conv, rows_b)
    tile_max = max(reserve, band_in)
    size = buffer_bytes(cfg, buffers)
    if tile_max + band_out * (1 + res) > size:
        raise ProgramError(f"conv {conv}: {rows_b}-row bands do not fit a bank above "
                           f"{tile_max} B of input")
    marks: list[tuple[int, int, int]] = []
    n_acc = 0
    for (st, nslots), (b, step_tiles) in zip(slots, steps):
        marks.append((len(load_q), len(comp_q), len(store_q)))
        oy0 = b * rows_b
        orows = min(rows_b, oh - oy0)
        bank = (st % buffers) * size
        y_lo = oy0 * sh - pt                      # first padded-input row of the band
        y_hi = (oy0 + orows - 1) * sh + conv.kh - pt   # one past the last
        top, bottom = max(0, -y_lo), max(0, y_hi - conv.h)
        in_rows = y_hi - y_lo
        load_q += act_loads((("pop_next",) if st >= buffers else ()),
                            () if place.scale else ("push_next",), in_space,
                            in_addr + max(0, y_lo) * conv.w * conv.cin, bank,
                            in_rows - top - bottom, conv.w, conv.cin, conv.w * conv.cin,
                            (top, bottom, pl, pr), place.zp_in)
        first: tuple[str, ...] = ("pop_prev",) + (("pop_next",) if st >= buffers else ())
        if place.scale is not None:
            (s_space, s_addr), mul = place.scale
            s_at = bank + size - conv.cin  # ``max_band_rows`` left it
            load_q.append(make(Op.LOAD, ("push_next",), kind=Kind.ACT, space=s_space,
                               dram=s_addr, sram=s_at, rows=1, cols=1, depth=conv.cin,
                               stride=conv.cin))
            # the GEMMs that read the band wait for this VEC (``hazards``)
            comp_q.append(make(Op.VEC, first, vop=VecOp.MUL, src=bank, src2=s_at, dst=bank,
                               count=in_rows * wp * conv.cin, cols=conv.cin, param=mul))
            first = ()
        m = orows * ow
        out_base = bank + tile_max
        res_base = out_base + rows_b * ow * px
        # a tile's weights just before its first step, then its residual tile: the
        # compute queue pops their tokens in this order
        for t in step_tiles:
            if b == 0:
                load_q += wloads[t]
            if place.residual is not None:
                (r_space, r_addr), _ = place.residual
                n0, nl = tiles[t]
                load_q.append(make(Op.LOAD, ("push_next",), kind=Kind.ACT, space=r_space,
                                   dram=r_addr + oy0 * ow * px + n0, sram=res_base + m * n0,
                                   rows=m, cols=1, depth=nl, stride=px))
        for i, t in enumerate(step_tiles):
            (n0, nl), k = tiles[t], ks[t]
            deps: tuple[str, ...] = ()
            if i == 0:
                deps = first
            comp_q.append(make(Op.CFG, deps, inp=bank, in_w=wp, cin=conv.cin,
                               kc=nl // lanes if conv.depthwise else conv.cin,
                               c_base=n0 if conv.depthwise else 0, kh=conv.kh, kw=conv.kw,
                               stride=s, stride_h=sh if sh != s else 0, out_w=ow,
                               wgt_stride=wgt_stride[t], acc_stride=nl))
            wbase = place.wgt + wgt_off[t]
            acc0 = (n_acc % 2) * half if double else 0
            n_acc += 1
            wait = ("pop_prev",) if streamed and b == 0 else ()  # tile t's weights
            if df == Dataflow.WS:
                for k0 in range(0, k, R):
                    comp_q.append(make(Op.GEMM, wait if k0 == 0 else (), df=df, diag=diag,
                                       lanes=lanes_field, reset=int(k0 == 0), m0=0, m_len=m,
                                       k0=k0, k_len=min(R, k - k0), n_len=nl,
                                       wgt=wbase + k0 * wgt_stride[t], acc=acc0))
            else:
                for m0 in range(0, m, R):
                    comp_q.append(make(Op.GEMM, wait if m0 == 0 else (), df=df, diag=diag,
                                       lanes=lanes_field, reset=1, m0=m0,
                                       m_len=min(R, m - m0),
                                       k0=0, k_len=k, n_len=nl, wgt=wbase,
                                       acc=acc0 + m0 * nl))
            last = i == len(step_tiles) - 1
            dst = out_base + m * n0 * lanes  # tiles before this one: n0 * lanes columns
            # each tile's results go to the store queue as soon as they are ready; the
            # step's last tile also releases the bank for the load two steps on
            vdeps: tuple[str, ...] = ("push_next",)
            if last and st + buffers < nslots:
                vdeps = ("push_prev", "push_next")
            post = lut is not None or res  # VECs after the requantize
            requant = make(Op.VEC, () if post else vdeps, vop=VecOp.REQUANT,
                           src=acc0, dst=dst, count=m * nl, cols=nl,
                           param=place.params + block_off[t])
            comp_q.append(requant)
            if lut is not None:
                comp_q.append(make(Op.VEC, () if res else vdeps, vop=VecOp.LUT, src=dst,
                                   dst=dst, count=m * nl, param=lut))
            if place.residual is not None:
                comp_q.append(make(Op.VEC, ("pop_prev",) + vdeps, vop=VecOp.ADD, src=dst,
                                   src2=res_base + m * n0, dst=dst, count=m * nl,
                                   param=place.residual[1]))
            sdeps: tuple[str, ...] = ("pop_prev",)
            if last and st + buffers < nslots:
                sdeps += ("push_prev",)
            if p > 1:  # phase i = n0 // nl: input row y's results are output row p*y + i
                store_q.append(make(Op.STORE, sdeps, space=out_space,
                                    dram=out_addr + (p * oy0 + n0 // nl) * out_row, sram=dst,
                                    rows=orows, cols=ow, depth=nl, stride=p * out_row))
            else:
                # a packed depthwise row holds ``lanes`` pixels of this group's channels
                store_q.append(make(Op.STORE, sdeps, space=out_space,
                                    dram=out_addr + oy0 * ow * px + n0, sram=dst, rows=m,
                                    cols=lanes, depth=nl // lanes, stride=px,
                                    pitch=conv.cout if lanes > 1 else 0))
    for (_, nl), k in zip(tiles, ks):
        folds_total += (math.ceil(k / R) if df == Dataflow.WS
                        else math.ceil(oh * ow / R)) * math.ceil(nl / cfg.cols)
    return ConvQueues(load_q, comp_q, store_q, marks, nbands, rows_b, folds_total, df,
                      wbytes, off_p, tile_max)


def long_k(conv: Conv) -> bool:
    """A one-pixel 1x1 conv whose K is more than one DMA row holds: ``long_k_layer``."""
    return (conv.h * conv.w == 1 and conv.kh * conv.kw == 1 and conv.cin > MAX_RUN
            and not conv.depthwise and conv.phases == 1)


def long_k_layer(cfg: NpuConfig, conv: Conv, place: Placement,
                 dataflow: Dataflow | str | None = None, lut: int | None = None,
                 sync: bool = True) -> LayerProgram:
    """A one-pixel 1x1 conv whose K is more than one DMA row or CFG holds (> 2047): a
    vector times a matrix, or a global pool over more than 2047 pixels (the ones row
    times the activation). The input vector arrives in flat runs; K is cut into chunks
    of at most 2047, each with its own CFG, accumulating into the same accumulators
    (OS: one fold per chunk, chained after the first; WS: 64-row folds)."""
    if place.stream_from is not None:
        raise ProgramError(f"conv {conv}: streamed weights with K > {MAX_RUN}")
    df = (Dataflow.OS if dataflow is None
          else Dataflow[dataflow.upper()] if isinstance(dataflow, str) else dataflow)
    k, R = conv.cin, cfg.rows
    out_base = align(k)
    if out_base + conv.cout > cfg.activation_bank:
        raise ProgramError(f"conv {conv}: the {k}-element input and its output do not fit "
                           f"an activation bank ({cfg.activation_bank} B)")
    in_space, in_addr = place.inp
    out_space, out_addr = place.out
    runs = flat_runs(k, MAX_RUN)
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    prog += [make(Op.LOAD, ("push_next",) if i == len(runs) - 1 else (), kind=Kind.ACT,
                  space=in_space, dram=in_addr + off, sram=off, rows=rows, cols=1,
                  depth=depth, stride=depth) for i, (off, rows, depth) in enumerate(runs)]
    half = cfg.accumulator_words // 2
    folds, off_p = 0, 0
    for t, (n0, nl) in enumerate(n_tiles(conv, cfg.cols)):
        acc0 = (t % 2) * half
        for j, k0 in enumerate(range(0, k, MAX_RUN)):
            kl = min(MAX_RUN, k - k0)
            prog.append(make(Op.CFG, ("pop_prev",) if t == j == 0 else (), inp=k0, in_w=1,
                             cin=kl, kc=kl, c_base=0, kh=1, kw=1, stride=1, out_w=1,
                             wgt_stride=conv.cout, acc_stride=nl))
            wgt = place.wgt + k0 * conv.cout + n0
            if df == Dataflow.OS:
                prog.append(make(Op.GEMM, df=df, reset=int(j == 0), chain=int(j > 0), m0=0,
                                 m_len=1, k0=0, k_len=kl, n_len=nl, wgt=wgt, acc=acc0))
                folds += int(j == 0)
            else:
                for f0 in range(0, kl, R):
                    prog.append(make(Op.GEMM, df=df, reset=int(j == 0 and f0 == 0), m0=0,
                                     m_len=1, k0=f0, k_len=min(R, kl - f0), n_len=nl,
                                     wgt=wgt + f0 * conv.cout, acc=acc0))
                    folds += 1
        prog.append(make(Op.VEC, () if lut is not None else ("push_next",), vop=VecOp.REQUANT,
                         src=acc0, dst=out_base + n0, count=nl, cols=nl,
                         param=place.params + off_p))
        if lut is not None:
            prog.append(make(Op.VEC, ("push_next",), vop=VecOp.LUT, src=out_base + n0,
                             dst=out_base + n0, count=nl, param=lut))
        prog.append(make(Op.STORE, ("pop_prev",), space=out_space, dram=out_addr + n0,
                         sram=out_base + n0, rows=1, cols=1, depth=nl, stride=conv.cout))
        off_p += 4 * (3 + 3 * nl)
    return LayerProgram(prog, conv.macs, 1, folds, df, k * conv.cout,
                        {"band_rows": 1, "param_bytes": off_p})


def act_loads(first: tuple[str, ...], last: tuple[str, ...], space: Space, dram: int,
              sram: int, rows: int, cols: int, depth: int, stride: int,
              pad: tuple[int, int, int, int], pad_value: int) -> list[Instr]:
    """One padded 2-D activation LOAD (pad = top, bottom, left, right), split into one
    descriptor per row when the row stride overflows its 14-bit field (wide, deep
    tensors such as 96 x 200 channels); ``first`` / ``last``: the tokens of the whole."""
    top, bottom, pl, pr = pad
    fields = {"kind": Kind.ACT, "space": space, "cols": cols, "depth": depth, "pad_left": pl,
              "pad_right": pr, "pad_value": pad_value}
    if stride < 1 << 14 or rows <= 1:
        return [make(Op.LOAD, first + last, dram=dram, sram=sram, rows=rows,
                     stride=stride if rows > 1 else 0, pad_top=top, pad_bottom=bottom,
                     **fields)]
    row_bytes = (cols + pl + pr) * depth
    loads = []
    for r in range(rows):
        deps = (first if r == 0 else ()) + (last if r == rows - 1 else ())
        loads.append(make(Op.LOAD, deps, dram=dram + r * stride,
                          sram=sram + ((top + r) * row_bytes if r else 0), rows=1, stride=0,
                          pad_top=top if r == 0 else 0,
                          pad_bottom=bottom if r == rows - 1 else 0, **fields))
    return loads


def _interleave(*queues: list[Instr]) -> list[Instr]:
    out: list[Instr] = []
    for group in zip(*(_chunks(q, len(queues[0])) for q in queues)):
        for part in group:
            out += part
    return out


def _chunks(q: list[Instr], n: int) -> list[list[Instr]]:
    """Split a queue into ``n`` nearly equal runs (for readable interleaving)."""
    size = math.ceil(len(q) / n) if n else len(q)
    return [q[i * size:(i + 1) * size] for i in range(n)] if n else [q]


def gemm_layer(cfg: NpuConfig, m: int, k: int, n: int, place: Placement,
               dataflow: Dataflow | str | None = None, sync: bool = True) -> LayerProgram:
    """(M x K) @ (K x N) with requantization: a 1x1 conv over an M x 1 image."""
    return conv2d_layer(cfg, Conv(h=m, w=1, cin=k, cout=n), place, dataflow, sync=sync)


# -- element-wise and pooling ------------------------------------------------------------
def add_layer(cfg: NpuConfig, n: int, a: tuple[Space, int], b: tuple[Space, int],
              out: tuple[Space, int], param: int, sync: bool = True) -> list[Instr]:
    """out = ADD(a, b) over ``n`` int8 elements with rescale (``add_block`` at param)."""
    chunk = min(cfg.activation_bank // 3, 2047 * 64)
    prog: list[Instr] = [make(Op.SYNC)] if sync else []
    for i, c0 in enumerate(range(0, n, chunk)):
        cnt = min(chunk, n - c0)
        bank = (i % 2) * cfg.activation_bank
        first = i >= 2
        rows, depth = _rows_depth(cnt)
        for j, (sp, addr) in enumerate((a, b)):
            deps = (("pop_next",) if first and j == 0 else ()) + \
                (("push_next",) if j == 1 else ())
            prog.append(make(Op.LOAD, deps, kind=Kind.ACT, space=sp, dram=addr + c0,
                             sram=bank + j * chunk, rows=rows, cols=1, depth=depth,
                             stride=depth))
        more = (i + 2) * chunk < n
        prog.append(make(Op.VEC, ("pop_prev",) + (("pop_next",) if first else ()) +
                         (("push_prev",) if more else ()) + ("push_next",),
                         vop=VecOp.ADD, src=bank, src2=bank + chunk, dst=bank + 2 * chunk,
                         count=cnt, param=param))
        prog.append(make(Op.STORE, ("pop_prev",) + (("push_prev",) if more else ()),
                         space=out[0], dram=out[1] + c0, sram=bank + 2 * chunk, rows=rows,
                         cols=1, depth=depth, stride=depth))
    return prog


def align(n: int) -> int:
    """``n`` rounded up to ``ALIGN``."""
    return -(-n // ALIGN) * ALIGN


def flat_runs(count: int, depth: int = 1024) -> list[tuple[int, int, int]]:
    """(offset, rows, depth) descriptors covering ``count`` contiguous bytes."""
    runs, off = [], 0
    while off < count:
        rows = min(2047, (count - off) // depth)
        if rows == 0:
            runs.append((off, 1, count - off))
            break
        runs.append((off, rows, depth))
        off += rows * depth
    return runs


def _rows_depth(count: int) -> tuple[int, int]:
    """Factor a flat run as rows x depth within the 11-bit fields."""
    for depth in range(min(count, 2047), 0, -1):
        if count % depth == 0 and count // depth <= 2047:
            return count // depth, depth
    raise ProgramError(f"cannot describe {count} bytes as one DMA")


def global_avgpool_layer(cfg: NpuConfig, h: int, w: int, c: int, inp: tuple[Space, int],
                         out: tuple[Space, int], param: int,
                         sync: bool = True) -> list[Instr]:
    """Global average pool of an HWC tensor held in one bank."""
    if h * w * c + c > cfg.activation_bank:
        raise ProgramError(f"global pool of {h}x{w}x{c} does not fit an activation bank")
    return ([make(Op.SYNC)] if sync else []) + [
        make(Op.LOAD, ("push_next",), kind=Kind.ACT, space=inp[0], dram=inp[1], sram=0,
             rows=h, cols=w, depth=c, stride=w * c),
        make(Op.VEC, ("pop_prev", "push_next"), vop=VecOp.AVGPOOL, src=0, dst=h * w * c,
             count=h * w * c, param=param),
        make(Op.STORE, ("pop_prev",), space=out[0], dram=out[1], sram=h * w * c, rows=1,
             cols=1, depth=c, stride=c)]


def pool_block(h: int, w: int, c: int, k: int, stride: int, qmin: int = -128,
               qmax: int = 127) -> np.ndarray:
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    return keyed_block(POOL_KEYS, in_w=w, channels=c, kh=k, kw=k, stride=stride, out_h=oh,
                       out_w=ow, qmin=qmin, qmax=qmax)


def add_block(**values: int) -> np.ndarray:
    return keyed_block(ADD_KEYS, **values)


def end() -> list[Instr]:
    return [make(Op.END)]
