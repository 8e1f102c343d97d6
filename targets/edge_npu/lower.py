"""NPU segments (lists of ``Layer``) -> one edge-npu program each, with a memory plan.

Memory plan, as the Edge TPU compiler does it, for all segments of a model at once
(they share one device):

    PCACHE  [params | cached weights | staging for streamed weights | activation scratch]
    HOST    [streamed weights | per segment: input and output buffers]

- params (requant blocks, LUTs, ADD/MUL/pool blocks, ones rows) are small and always
  cached; weights are cached greedily in layer order while they fit what the
  activation scratch leaves, the rest are streamed from the host on every inference
  through one staging area sized for the largest streamed layer;
- intermediate activations live in the scratch region (first fit, freed after their last
  reader); segment inputs and outputs in host buffers (NCHW <-> HWC at the boundary is
  the host driver's job).

Before planning, ``fusion`` merges layers (LUT chains into one table and into the conv
before them, ``y + x * s`` into one element-wise layer, a squeeze-excite scale and a
residual add into their conv); the segment keeps its unfused layers for the integer
reference. Each layer becomes a program from ``programs`` / ``vector_layers`` starting
with SYNC, conv layers with their tuned ``Mapping`` if the database has one; the
segment program is their concatenation plus END.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from itertools import product
from typing import Any

import numpy as np

from . import fusion, programs, rounding
from .cascade import Copy, HostLink, Member, cascade_program
from .config import NpuConfig
from .isa import (
    MUL_KEYS,
    Dataflow,
    Instr,
    IsaError,
    Op,
    Space,
    VecOp,
    clamp_block,
    keyed_block,
    lut_block,
)
from .layers import Layer, QTensor
from .mapping import Mapping, workload_key
from .pixel_chain import Pass, chain_program
from .programs import ALIGN, Conv, Placement, ProgramError, align
from .simulator import simulate
from .vector_layers import (
    PREV,
    Step,
    Up,
    concat_layer,
    elementwise_layer,
    maxpool_layer,
    resize_layer,
)

Loc = tuple[Space, int]


CASCADE_BANDS = 4  # bands at least, per cascaded conv whose mapping gives no rows
CASCADE_BUFFERS = (2, 4)  # buffer counts a cascade tries (``cascade``; 8 never won)
CASCADE_COPY_ROWS = (4, 8)  # rows per step a staged host input tries
# bands a cascade whose last conv stores to the host also tries: a band's transfer holds
# the in-order store queue, and short ones let the other members' stores come between
CASCADE_HOST_BANDS = 32
# over the host queue (``cascade.HostLink``) the first conv's rows per band, and the
# bands at least of the others: with the whole image staged, det 320's stem cascade
# (13 convs, 492,813 cycles at 8 bands) takes 443,511 for 11 convs at 32 bands, but cls's
# 3-conv one is faster at 8 (39,617 against 40,955), so both are tried
CASCADE_LINK_ROWS = (2, 4)
CASCADE_LINK_BANDS = (8, 32)
CASCADE_RING_SLOTS = 8  # steps of output a host link's ring holds when not all fit
# an input too large to stage whole comes through a ring of slots of input rows (two
# runs of bands share a halo row or two, sent twice, so a slot holds many bands). The
# ring is reserved before pixel packing: on det 640, 2 x 48 rows beat 2 x 32, 3 x 40,
# 4 x 32 and 2 x 80 (larger rings cost packed weights, smaller ones send more halo rows)
CASCADE_IN_SLOTS = 2
CASCADE_IN_ROWS = 48
# a chain too long to keep every intermediate whole and alive keeps those only the next
# conv reads in row rings (``cascade.Member.ring``) of a 32nd of their rows, 16 at least.
# On det 640 (default cycles): 32 / 16 rows 4,019,298; 16 / 16 4,036,168; 12 / 16
# 4,034,933; 8 / 16 4,054,873; 16 / 24 4,043,084; 16 / 8 4,117,350; 4 / 16 4,326,037
# (larger rings leave room for fewer of them, smaller ones cut the bands short)
CASCADE_MID_PART = 32
CASCADE_MID_ROWS = 16
# the first pass of a ringed chain tries each longer cascade only the ways that came
# within this factor of the fastest at the length before (det 640, eighth-rows rings:
# the same cascades, its first pass 44 s -> 21 s)
CASCADE_PRUNE = 1.1

Span = tuple[int, int] | tuple[int, int, bool]  # a cascade's first and last layer; rings?


@dataclass
class SegLayer:
    """A layer inside a segment: which values it reads and writes."""

    name: str
    layer: Layer
    inputs: list[str]
    output: str
    origin: Layer | None = None  # the partitioned layer a copy inserted by ``lower`` serves
    lut: Layer | None = None  # a LUT layer fused into this conv (applied before the store)
    scale: Layer | None = None  # a broadcast MUL fused into this conv (its input is x * s)
    residual: Layer | None = None  # an ADD fused into this conv (its output plus a tensor)
    # written in place into a concat's output: (that value, byte offset of its channels);
    # the layer's ``out_pitch`` attribute spaces its pixels (``fusion.fuse_concat_inputs``)
    into: tuple[str, int] | None = None


class LowerError(ProgramError):
    """A segment could not be planned or lowered; ``layers`` (``layer``, the first, if
    known) are the partitioned layers to blame, so ``offload`` can leave them on the CPU
    and partition again."""

    def __init__(self, message: str, layer: Layer | None = None,
                 more: list[Layer] | None = None) -> None:
        super().__init__(message)
        self.layer = layer
        self.layers = ([layer] if layer is not None else []) + list(more or [])


def signature(layer: Layer) -> tuple[Any, ...]:
    """What identifies a layer across partitions of one module (kind, ops, tensors)."""
    return (layer.kind, tuple(layer.ops), tuple((t.shape, t.scale, t.zp) for t in layer.inputs),
            (layer.out.shape, layer.out.scale, layer.out.zp))


@dataclass
class Segment:
    """A partitioned NPU function: int8 inputs -> layers -> int8 outputs (value names)."""

    name: str
    inputs: list[str]
    outputs: list[str]
    layers: list[SegLayer]
    shapes: dict[str, tuple[int, ...]]  # value -> NCHW / 2-D shape as in Relax
    tensors: dict[str, QTensor]  # value -> HWC tensor


@dataclass
class LoweredSegment:
    name: str
    program: list[Instr]
    inputs: list[dict[str, Any]]  # {"addr", "shape"} host buffers (Relax shapes)
    outputs: list[dict[str, Any]]
    layers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NpuModel:
    """Everything the runtime needs: programs, memory images, and the plan's figures."""

    config: str
    segments: list[LoweredSegment]
    images: list[tuple[Space, int, bytes]]
    host_bytes: int
    param_bytes: int
    cached_weights: int
    streamed_weights: int
    scratch_bytes: int


def _i32(words: np.ndarray) -> bytes:
    return np.asarray(words, dtype=np.int32).tobytes()


# -- per-layer parameter images and weights ------------------------------------------------
def layer_images(cfg: NpuConfig, layer: Layer) -> tuple[dict[str, bytes], bytes]:
    """({param name: bytes}, weight bytes) a layer needs in PCACHE."""
    a, at = layer.arrays, layer.attrs
    if layer.kind in ("conv", "gap"):
        conv: Conv = at["conv"]
        params = {"requant": _i32(programs.pack_requant(
            conv, a["bias"], a["mult"], a["shift"], at["zp_out"], at["qmin"], at["qmax"],
            cfg.cols))}
        if layer.kind == "gap":
            params["ones"] = np.ones(conv.cin, dtype=np.int8).tobytes()
            return params, b""
        w = programs.pack_weights(conv, a["weights"], cfg.cols)
        return params, w.tobytes()
    if layer.kind == "se":  # the pool's ones, each pass's blocks; the convs' weights
        parts = at["parts"]
        images = [layer_images(cfg, part.layer) for part in parts]
        params = {}
        for j, (part, (p, _)) in enumerate(zip(parts, images)):
            params.update({f"{key}{j}": data for key, data in p.items()})
            if part.lut is not None:
                params[f"lut{j}"] = _i32(lut_block(part.lut.arrays["table"]))
        return params, b"".join(w for _, w in images[1:])
    if layer.kind == "lut":
        return {"lut": _i32(lut_block(a["table"]))}, b""
    if layer.kind in ("add", "mul", "muladd"):
        if layer.kind == "add":
            params = {"add": _add_block(at)}
        elif layer.kind == "mul":
            params = {"mul": _mul_block(at)}
        else:
            params = {"mul": _mul_block(at["mul"]), "add": _add_block(at["add"])}
            if "add2" in at:
                params["add2"] = _add_block(at["add2"])
        if "table" in a:  # a concat's table, applied last (``fusion.fuse_concat_inputs``)
            params["lut"] = _i32(lut_block(a["table"]))
        if "up_table" in a:  # an upsampled operand's table (``fusion.fuse_upsample_add``)
            params["up_lut"] = _i32(lut_block(a["up_table"]))
        return params, b""
    if layer.kind == "maxpool":
        ih, iw, ic = layer.inputs[0].shape
        _, words = maxpool_layer(cfg, ih, iw, ic, at["k"], at["stride"], at["pad"],
                                 (Space.HOST, 0), (Space.HOST, 0), 0)
        params = {"pool": _i32(words)}
        if "table" in a:
            params["lut"] = _i32(lut_block(a["table"]))
        return params, b""
    if layer.kind == "copy":
        return {"clamp": _i32(clamp_block(-128, 127))}, b""
    if layer.kind == "resize":  # the clamp copies the second pass's rows
        params = {"clamp": _i32(clamp_block(-128, 127))}
        if "table" in a:
            params["lut"] = _i32(lut_block(a["table"]))
        return params, b""
    if layer.kind == "concat":  # inputs written in place need no table here
        return {f"lut{i}": _i32(lut_block(a[f"table{i}"])) for i in range(len(layer.inputs))
                if i not in at.get("in_place", ())}, b""
    if layer.kind == "alias":
        return {}, b""
    raise ProgramError(f"unknown layer kind {layer.kind!r}")


def _add_block(at: dict[str, Any]) -> bytes:
    return _i32(programs.add_block(**{k: at[k] for k in (
        "zp1", "mult1", "shift1", "zp2", "mult2", "shift2", "mult_out", "shift_out",
        "zp_out", "qmin", "qmax")}))


def _mul_block(at: dict[str, Any]) -> bytes:
    return _i32(keyed_block(MUL_KEYS, **{k: at[k] for k in MUL_KEYS}))


_ROUNDED = (VecOp.REQUANT, VecOp.ADD, VecOp.MUL)


def with_rounding(instrs: list[Instr], rnd: int) -> list[Instr]:
    """``instrs`` with the VEC requant / add / mul ops set to round with ``rnd``."""
    return [Instr(i.op, {**i.fields, "rnd": int(rnd)}, i.deps)
            if i.op == Op.VEC and i.vop in _ROUNDED else i for i in instrs]


def layer_program(cfg: NpuConfig, layer: Layer, inputs: list[Loc], out: Loc,
                  params: dict[str, int], wgt: int, stream_from: int | None,
                  dataflow: str | None = None, mapping: Mapping | None = None
                  ) -> list[Instr]:
    """Instructions of one layer at the given places (starts with SYNC); its VEC ops
    round as the layer's parameters were made (``rounding.of_attrs``).

    Conv / global-pool layers take ``mapping`` (``dataflow`` overrides its dataflow);
    a conv whose ``params`` hold a "lut" block applies that fused LUT before storing, one
    with a "mul" block scales its input by ``inputs[1]`` (a fused squeeze-excite MUL),
    one with an "add" block adds ``inputs[-1]`` to its output (a fused residual ADD whose
    first operand is the conv's output)."""
    return with_rounding(_layer_program(cfg, layer, inputs, out, params, wgt, stream_from,
                                        dataflow, mapping), rounding.of_attrs(layer.attrs))


def _layer_program(cfg: NpuConfig, layer: Layer, inputs: list[Loc], out: Loc,
                   params: dict[str, int], wgt: int, stream_from: int | None,
                   dataflow: str | None, mapping: Mapping | None) -> list[Instr]:
    at = layer.attrs
    mp = mapping or Mapping()
    df = dataflow or mp.dataflow
    knobs = {"band_rows": mp.band_rows, "order": mp.order or "band"}
    if layer.kind == "conv":
        place = _conv_place(layer, inputs, out, params, wgt, stream_from)
        return programs.conv2d_layer(cfg, at["conv"], place, df, lut=params.get("lut"),
                                     **knobs).instrs
    if layer.kind == "gap":
        _pool_input_on_chip(inputs[0])
        place = Placement(inp=(Space.PCACHE, params["ones"]), out=out, wgt=inputs[0][1],
                          params=params["requant"])
        return programs.conv2d_layer(cfg, at["conv"], place, df, **knobs).instrs
    if layer.kind == "se":
        return _se_program(cfg, layer, inputs[0], out, params, wgt, stream_from)
    h, w, c = layer.out.shape
    pitch = at.get("out_pitch")  # written into a concat's output (its channels)
    # a concat's table after the element-wise ops (``fusion.fuse_concat_inputs``)
    last: list[Step] = [(VecOp.LUT, params["lut"], (PREV, 0))] if "lut" in params else []
    up = None
    if "up" in at:  # an operand upsampled on the way (``fusion.fuse_upsample_add``)
        k, f = at["up"]
        up = Up(k, f, layer.inputs[k].shape[0], params.get("up_lut"))
    if layer.kind == "lut":
        return elementwise_layer(cfg, h * w, c, inputs[:1], out, [(VecOp.LUT, params["lut"])],
                                 pitch=pitch)
    if layer.kind == "copy":
        return elementwise_layer(cfg, h * w, c, inputs[:1], out,
                                 [(VecOp.CLAMP, params["clamp"])], pitch=pitch)
    if layer.kind in ("add", "mul"):
        vop = VecOp.ADD if layer.kind == "add" else VecOp.MUL
        return elementwise_layer(cfg, h * w, c, inputs[:2], out,
                                 [(vop, params[layer.kind], (0, 1)), *last],
                                 broadcast=bool(at["broadcast"]), pitch=pitch, up=up)
    if layer.kind == "muladd":  # y + x * s: MUL (x, s), then ADD with y (x if not given)
        y = at["y"]  # then ADD r, the last input, if an add joined (``fuse_muladd_add``)
        first = (PREV, y) if at["mul_first"] else (y, PREV)
        steps: list[Step] = [(VecOp.MUL, params["mul"], (0, 1)),
                             (VecOp.ADD, params["add"], first)]
        if "add2" in at:
            r = len(inputs) - 1
            second = (PREV, r) if at["add2_first"] else (r, PREV)
            steps.append((VecOp.ADD, params["add2"], second))
        return elementwise_layer(cfg, h * w, c, inputs, out, steps + last, broadcast=True,
                                 pitch=pitch, up=up)
    if layer.kind == "maxpool":
        ih, iw, ic = layer.inputs[0].shape
        prog, _ = maxpool_layer(cfg, ih, iw, ic, at["k"], at["stride"], at["pad"], inputs[0],
                                out, params["pool"], params.get("lut"))
        return prog
    if layer.kind == "resize":
        ih, iw, ic = layer.inputs[0].shape
        copy = (VecOp.CLAMP, params["clamp"])
        vop = (VecOp.LUT, params["lut"]) if "lut" in params else copy
        return resize_layer(cfg, ih, iw, ic, at["factor"], inputs[0], out, vop, copy,
                            pitch=pitch)
    if layer.kind == "concat":
        return concat_layer(cfg, h * w, [t.shape[2] for t in layer.inputs], inputs, out,
                            [(VecOp.LUT, params[f"lut{i}"]) if f"lut{i}" in params else None
                             for i in range(len(inputs))])
    if layer.kind == "alias":
        return []
    raise ProgramError(f"unknown layer kind {layer.kind!r}")


def _conv_place(layer: Layer, inputs: list[Loc], out: Loc, params: dict[str, int],
                wgt: int, stream_from: int | None) -> Placement:
    return Placement(inp=inputs[0], out=out, wgt=wgt, params=params["requant"],
                     zp_in=layer.inputs[0].zp, stream_from=stream_from,
                     scale=(inputs[1], params["mul"]) if "mul" in params else None,
                     residual=(inputs[-1], params["add"]) if "add" in params else None)


def cascade_chains(layers: list[SegLayer]) -> list[tuple[int, int]]:
    """(first, last) indices of runs of two or more convs that ``cascade`` can run
    together: each reads the one before's output, with no fused input scale or residual
    (their other operand is not ordered by the cascade's steps) and not one pixel of long
    K."""
    def ok(sl: SegLayer) -> bool:
        c = sl.layer.attrs.get("conv")
        return (sl.layer.kind == "conv" and sl.scale is None and sl.residual is None
                and isinstance(c, Conv) and not programs.long_k(c.on_array()))

    chains: list[tuple[int, int]] = []
    start = None
    for i, sl in enumerate(layers):
        if start is not None and not (ok(sl) and sl.inputs[0] == layers[i - 1].output):
            if i - start >= 2:
                chains.append((start, i - 1))
            start = None
        if start is None and ok(sl):
            start = i
    if start is not None and len(layers) - start >= 2:
        chains.append((start, len(layers) - 1))
    return chains


def _pool_input_on_chip(inp: Loc) -> None:
    if inp[0] != Space.PCACHE:
        raise ProgramError("global pool reads its input as weights: it must be in PCACHE")


def _se_program(cfg: NpuConfig, layer: Layer, inp: Loc, out: Loc, params: dict[str, int],
                wgt: int, stream_from: int | None) -> list[Instr]:
    """A global pool and its one-pixel convs (``fusion.fuse_pixel_chains``) as one chain
    of passes: the pool's ones row times the activation (read in place, as a lone pool
    does), then each conv's weights, packed one after another at ``wgt``."""
    _pool_input_on_chip(inp)
    passes, off = [], 0
    for j, part in enumerate(layer.attrs["parts"]):
        conv = part.layer.attrs["conv"]
        lut = params.get(f"lut{j}")
        if j == 0:
            passes.append(Pass(conv.cin, conv.cout, inp[1], params["requant0"], lut))
            continue
        passes.append(Pass(conv.cin, conv.cout, wgt + off, params[f"requant{j}"], lut,
                           streamed=stream_from is not None))
        off += conv.cin * conv.cout
    stream = (stream_from, wgt, off) if stream_from is not None else None
    return chain_program(cfg, (Space.PCACHE, params["ones0"]), passes, out, stream)


def fits(cfg: NpuConfig, layer: Layer) -> str | None:
    """None if the layer's program can be generated for ``cfg``, else the reason."""
    try:
        params, wbytes = layer_images(cfg, layer)
        dummy = {k: 0 for k in params}
        space = Space.PCACHE
        layer_program(cfg, layer, [(space, 0)] * len(layer.inputs), (space, 0), dummy, 0, None)
        if len(wbytes) + sum(len(v) for v in params.values()) > cfg.parameter_cache and \
                layer.kind != "conv":
            return f"parameters exceed the {cfg.parameter_cache} B parameter cache"
    except (ProgramError, IsaError) as exc:
        return f"does not fit {cfg.name}: {exc}"
    return None


# -- activation planning -----------------------------------------------------------------
def _expand(seg: Segment) -> list[SegLayer]:
    """Insert the copies the places need: a global pool reads its input as weights (so a
    value in a host buffer, a segment input or output, is first copied to PCACHE), and an
    alias that is a segment output copies."""
    layers: list[SegLayer] = []
    host = set(seg.inputs) | set(seg.outputs)  # values that live in host buffers
    for sl in seg.layers:
        if sl.layer.kind == "alias" and sl.inputs[0] in host:
            host.add(sl.output)  # an alias shares its source's buffer
        if sl.layer.kind == "gap" and sl.inputs[0] in host:
            copy_name = f"{sl.inputs[0]}.pcache{len(layers)}"
            t = seg.tensors[sl.inputs[0]]
            layers.append(SegLayer(copy_name, Layer("copy", [t], t), [sl.inputs[0]], copy_name,
                                   origin=sl.layer))
            seg.tensors[copy_name] = t
            sl = SegLayer(sl.name, sl.layer, [copy_name], sl.output)
        if sl.layer.kind == "alias" and sl.output in seg.outputs:
            sl = SegLayer(sl.name, Layer("copy", sl.layer.inputs, sl.layer.out, ops=sl.layer.ops),
                          sl.inputs, sl.output, origin=sl.layer)
        layers.append(sl)
    return layers


def pack_pixels(cfg: NpuConfig, plans: list[list[SegLayer]], room: int,
                sizes: dict[tuple[int, int], int] | None = None) -> list[list[SegLayer]]:
    """Convs get the ``Conv.pack`` that ``programs.choose_pack`` picks (a dense conv
    with few output channels, or a depthwise conv, runs several output pixels per array
    pass) while what they add fits ``room`` more bytes of parameter cache: packs are
    taken by fold cycles saved per byte added. A packed dense conv's weights hold g
    shifted copies of each filter; a packed depthwise conv keeps its compact taps
    (GEMM ``lanes``), so only its requant blocks grow. The layer's weights, parameters
    and output stay as they are; packing happens where the weights are laid out and
    the program is generated. ``sizes``: the unpacked layers' PCACHE bytes, by
    (segment, layer) index, if already known."""
    offers = []
    for si, plan in enumerate(plans):
        for li, sl in enumerate(plan):
            conv = sl.layer.attrs.get("conv") if sl.layer.kind == "conv" else None
            costs = programs.pack_costs(cfg, conv) if isinstance(conv, Conv) else {}
            g = min(costs, key=lambda p: (costs[p], p), default=1)
            if g == 1 or 1 not in costs:  # no gain, or unpacked the generator will refuse
                continue
            if conv.depthwise and sl.residual is not None:  # tiles not in the output layout
                continue
            layer = replace(sl.layer, attrs={**sl.layer.attrs, "conv": replace(conv, pack=g)})
            packed = replace(sl, layer=layer, origin=sl.origin or sl.layer)
            unpacked = (sizes or {}).get((si, li))
            extra = _pcache_bytes(*_images(cfg, packed)) - (
                unpacked if unpacked is not None else _pcache_bytes(*_images(cfg, sl)))
            offers.append((-(costs[1] - costs[g]) / max(extra, 1), extra, si, li, packed))
    out = [list(plan) for plan in plans]
    for _, extra, si, li, packed in sorted(offers, key=lambda o: o[:2]):
        if extra <= room:
            out[si][li] = packed
            room -= max(extra, 0)
    return out


def _pcache_bytes(params: dict[str, bytes], w: bytes) -> int:
    """Parameter-cache bytes of a layer's parameter blocks and (cached) weights."""
    return sum(align(len(d)) for d in params.values()) + (align(len(w)) if w else 0)


def ring_bytes(conv: Conv) -> int:
    """Bytes of the row ring a cascaded conv's output goes through (1 / CASCADE_MID_PART
    of its rows, CASCADE_MID_ROWS at least)."""
    h, w, ch = conv.out_shape
    return min(h, max(CASCADE_MID_ROWS, -(-h // CASCADE_MID_PART))) * w * ch


def ring_key(value: str) -> str:
    """The planner's name of the ring ``value`` goes through in a cascade."""
    return f"{value}.ring"


def ringed(layers: list[SegLayer], span: Span, host: dict[str, int] | set[str] = frozenset()
           ) -> dict[str, int]:
    """Value -> ring bytes of the intermediates a ringed ``span`` (first, last, True)
    passes through rings: each written by a layer of the span but the last and read only
    by the next, on chip."""
    if len(span) < 3 or not span[2]:
        return {}
    a, z = span[0], span[1]
    readers: dict[str, list[int]] = {}
    for i, sl in enumerate(layers):
        for v in sl.inputs:
            readers.setdefault(v, []).append(i)
    return {layers[i].output: ring_bytes(layers[i].layer.attrs["conv"]) for i in range(a, z)
            if readers.get(layers[i].output) == [i + 1] and layers[i].output not in host}


def _plan_activations(seg: Segment, base: int, end: int,
                      host: dict[str, int], layers: list[SegLayer] | None = None,
                      stop_on_fail: bool = False, in_place: bool = True,
                      spans: list[Span] | tuple = ()
                      ) -> tuple[dict[str, Loc], int]:
    """Places every value: inputs, outputs and spills in their host buffers, the rest in
    PCACHE scratch [base, end); returns (locations, scratch bytes used).

    A buffer lives from the layer that writes it to its last reader; an alias shares its
    source's buffer, a concat's input written in place (``SegLayer.into``) is a slice of
    the concat's, which lives from its first producer, and (``in_place``) an element-wise
    layer's output takes the buffer of an input that dies there. Offsets are assigned
    greedily by size, largest first, each at the lowest offset clear of the buffers
    already placed whose lifetimes overlap its own (TFLite's greedy-by-size arena
    planner): all lifetimes are known ahead, so large buffers do not end up split by the
    holes small ones leave. A buffer a layer of a cascade (``spans``: first and last
    layer) writes or reads lives through the whole cascade, whose layers run
    interleaved; in a ringed span (``ringed``) an intermediate only the next layer reads
    has no buffer of its own, only its ring (``ring_key``), which lives through the
    cascade: the span's layers must run as that one cascade."""
    layers = seg.layers if layers is None else layers
    last: dict[str, int] = {}
    for i, sl in enumerate(layers):
        for v in sl.inputs:
            last[v] = i
    buf: dict[str, str] = {}  # on-chip value -> buffer key
    born: dict[str, int] = {}  # buffer key -> the layer that first writes it
    dies: dict[str, int] = {}  # buffer key -> the last layer that reads it
    for i, sl in enumerate(layers):
        if sl.output in host:
            continue
        if sl.into is not None:  # a slice of a concat's output, which it makes first
            if sl.into[0] in host:
                continue  # of its host buffer (below)
            key = sl.into[0]
            born[key] = min(born.get(key, i), i)
            buf[sl.output] = key
            dies[key] = max(dies.get(key, i), last.get(sl.output, i))
            continue
        if sl.layer.kind == "alias":
            if sl.inputs[0] not in buf:
                continue  # an alias of a host buffer is that buffer (below)
            key = buf[sl.inputs[0]]
        elif in_place and (src := _in_place(seg, sl, i, buf, dies)):
            # an element-wise layer writes over an input that dies here (chunk i's
            # store follows its own load and no later load reads those bytes)
            key = buf[src]
        else:
            key = sl.output
            born[key] = min(born.get(key, i), i)
        buf[sl.output] = key
        dies[key] = max(dies.get(key, i), last.get(sl.output, i))
    sizes = {key: seg.tensors[key].size for key in born}
    for span in spans:
        a, z = span[0], span[1]
        rings = ringed(layers, span, host)
        for key, b in list(born.items()):
            if key in rings:  # its ring instead
                del born[key], dies[key]
                continue
            if a <= b <= z:
                born[key] = a
            if a <= dies[key] <= z:
                dies[key] = z
        for v, n in rings.items():
            born[ring_key(v)], dies[ring_key(v)], sizes[ring_key(v)] = a, z, n
    offset: dict[str, int] = {}
    placed: list[tuple[int, int, int, int, str]] = []  # (offset, size, born, dies, key)
    room = end - base
    for key in sorted(born, key=lambda k: (-sizes[k], born[k])):
        size, b, d = align(sizes[key]), born[key], dies[key]
        near = sorted(p for p in placed if p[2] <= d and b <= p[3])
        addr = 0
        for o, n, *_ in near:
            if addr + size <= o:
                break
            addr = max(addr, o + n)
        if addr + size > room:
            if stop_on_fail:
                raise _PlanFailed([p[4] for p in near] + [key])
            raise ProgramError(f"activation {key} ({size} B) does not fit the parameter "
                               f"cache's free space")
        offset[key] = addr
        placed.append((addr, size, b, d, key))
    loc: dict[str, Loc] = {v: (Space.HOST, a) for v, a in host.items()}
    for sl in layers:
        if sl.into is not None:
            continue  # below, once the concat's output has its place
        if sl.output in buf and buf[sl.output] in offset:
            loc[sl.output] = (Space.PCACHE, base + offset[buf[sl.output]])
        elif sl.output not in loc:  # an alias of a host buffer
            loc[sl.output] = loc[sl.inputs[0]]
    for key in born.keys() - buf.values():  # rings
        loc[key] = (Space.PCACHE, base + offset[key])
    for sl in layers:  # a ringed value: its ring (the layer's own program is not run)
        if sl.output in buf and buf[sl.output] not in offset:
            loc[sl.output] = loc[ring_key(buf[sl.output])]
    for sl in layers:  # a concat's input written in place: its channels' first byte
        if sl.into is not None:
            space, addr = loc[sl.into[0]]
            loc[sl.output] = (space, addr + sl.into[1])
    return loc, max((o + n for o, n, *_ in placed), default=0)


IN_PLACE = ("lut", "add", "mul", "muladd")  # kinds whose output pixel p reads input pixel p only


def _in_place(seg: Segment, sl: SegLayer, i: int, buf: dict[str, str],
              dies: dict[str, int]) -> str | None:
    """The input of element-wise layer ``sl`` (the ``i``-th) whose on-chip buffer its
    output can take: same size, and no reader after this layer."""
    if sl.layer.kind not in IN_PLACE or sl.into is not None:
        return None
    size = seg.tensors[sl.output].size
    for v in sl.inputs:
        if v in buf and seg.tensors[v].size == size and dies[buf[v]] <= i:
            return v
    return None


def _choose_spills(seg: Segment, layers: list[SegLayer], room: int,
                   in_place: bool = True) -> list[str]:
    """Activations to keep in host buffers so the rest fit ``room`` bytes of scratch.

    A spilled value costs its bytes over the link once when written and once per reader.
    Each time the plan fails, every value live there is tried as the next spill,
    finishing the plan with Belady's choice (the value whose last reader is furthest
    away, the larger on a tie) until it fits; the one whose finished plan moves the fewest
    bytes is kept. One of the candidates continues the previous best plan, so each step
    costs at most what Belady's choice alone would. Inputs of global pools stay (the pool
    reads them as weights)."""
    pinned = {v for sl in layers if sl.layer.kind in ("gap", "se") for v in sl.inputs}
    last: dict[str, int] = {}
    for i, sl in enumerate(layers):
        for v in sl.inputs:
            last[v] = i
    io = {v: 0 for v in seg.inputs + seg.outputs}
    stuck: set[str] = set()  # pinned values live where no value could move

    def live_at_failure(spills: list[str]) -> list[str] | None:
        """None if the plan fits, else the values that could move to the host."""
        try:
            _plan_activations(seg, 0, room, {**io, **{v: 0 for v in spills}}, layers,
                              stop_on_fail=True, in_place=in_place)
            return None
        except _PlanFailed as exc:
            live = [v for v in exc.live if v not in pinned and seg.tensors[v].size > 0]
            if not live:
                stuck.update(exc.live)
            return live

    def belady(spills: list[str]) -> list[str] | None:
        spills = list(spills)
        for _ in range(len(layers) + 1):
            live = live_at_failure(spills)
            if live is None:
                return spills
            if not live:
                return None
            spills.append(max(live, key=lambda v: (last.get(v, -1), seg.tensors[v].size)))
        return None

    spills: list[str] = []
    for _ in range(len(layers) + 1):
        live = live_at_failure(spills)
        if live is None:
            return spills
        finished = [(spill_bytes(seg, layers, done), v) for v in live
                    if (done := belady([*spills, v])) is not None]
        if not finished:
            break
        spills.append(min(finished, key=lambda t: t[0])[1])
    # where only pinned values were live, the global pools reading them must go
    pools = [sl.origin or sl.layer for sl in layers
             if sl.layer.kind in ("gap", "se") and stuck & set(sl.inputs)]
    blame = pools or [_largest([seg])]
    raise LowerError(f"activations of {seg.name} do not fit {room} B of scratch even with "
                     f"spills to the host", blame[0], blame[1:])


def spill_bytes(seg: Segment, layers: list[SegLayer], spills: list[str]) -> int:
    """Bytes the spilled values move over the link per inference (written once, read by
    each reader)."""
    readers: dict[str, int] = {}
    for sl in layers:
        for v in sl.inputs:
            readers[v] = readers.get(v, 0) + 1
    return sum(seg.tensors[v].size * (1 + readers.get(v, 0)) for v in spills)


class _PlanFailed(Exception):
    """The plan did not fit; ``live``: the buffers placed whose lifetimes overlap the one
    that did not fit, and that one."""

    def __init__(self, live: list[str]) -> None:
        self.live = live


# -- the whole model ---------------------------------------------------------------------
class _RingFailed(Exception):
    """A ringed span's layers did not run as their one cascade."""


def lower(cfg: NpuConfig, segments: list[Segment], dataflow: dict[str, str] | None = None,
          mappings: dict[str, Mapping] | None = None, fuse: bool = True,
          pack: bool = True, cascades: bool = True, rings: bool = True) -> NpuModel:
    """Memory plan and programs for all segments.

    ``dataflow``: layer name -> "ws" / "os"; ``mappings``: ``workload_key`` -> the
    tuned ``Mapping`` of conv / global-pool layers (others get the defaults); ``fuse``:
    merge layers first (``fusion.fuse``); ``pack``: pack output pixels
    where the parameter cache has room (``pack_pixels``); ``cascades``: run chains of
    convs band by band together (``cascade``) where the timing model finds it faster;
    ``rings``: a chain too long to keep its intermediates whole and alive may pass them
    through row rings.

    A ringed chain is lowered twice: the first plan gives its intermediates rings only,
    which is enough to time and pick its cascades but not to run its layers one by one;
    the second plans each picked cascade as a ringed span of its own, and the layers
    between them with their own buffers. If that does not fit or a cascade does not come
    out, the chain is lowered without rings."""
    args = (cfg, segments, dataflow, mappings, fuse, pack, cascades)
    model, picks = _lower(*args, rings=rings)
    if picks is None:
        return model
    whole = _lower(*args, rings=False)[0]
    if not any(len(span) > 2 for spans in picks.values() for span in spans):
        return whole  # no cascade through rings was picked
    try:
        ringed_model = _lower(*args, rings=True, fixed=picks)[0]
    except _RingFailed:
        return whole
    # rings slow a cascade that also fits whole (smaller bands): keep the faster
    return ringed_model if model_cycles(cfg, ringed_model) < model_cycles(cfg, whole) else whole


def model_cycles(cfg: NpuConfig, model: NpuModel) -> int:
    """Device cycles of one inference: every segment's program, timing only."""
    return sum(simulate(cfg, seg.program).cycles for seg in model.segments)


def _lower(cfg: NpuConfig, segments: list[Segment], dataflow: dict[str, str] | None,
           mappings: dict[str, Mapping] | None, fuse: bool, pack: bool, cascades: bool,
           rings: bool, fixed: dict[int, list[Span]] | None = None
           ) -> tuple[NpuModel, dict[int, list[Span]] | None]:
    """``lower``'s one pass: the model and, if a chain was ringed (its model not to be
    run), the spans for the second pass (``fixed``: each ringed one exactly one
    cascade)."""
    dataflow = dataflow or {}
    mappings = mappings or {}
    for seg in segments:
        seg.layers = _expand(seg)
    plans = [fusion.fuse(seg.layers, seg.outputs, cfg.activation_bank) if fuse
             else list(seg.layers)
             for seg in segments]
    # host IO buffers (addresses after the streamed weights are fixed later)
    io_sizes = [([seg.tensors[v].size for v in seg.inputs],
                 [seg.tensors[v].size for v in seg.outputs]) for seg in segments]
    # params (always cached) and weights (cached greedily, else streamed)
    items = [(si, li, *_images(cfg, sl))
             for si, plan in enumerate(plans) for li, sl in enumerate(plan)]
    # scratch needed: dry-run each segment's plan from address 0. Activations that do not
    # fit beside the parameters and one layer's streamed weights go to host buffers
    # (spills: streaming a weight costs its bytes once, a spill its bytes twice)
    room = cfg.parameter_cache - sum(align(len(d)) for *_, params, _ in items
                                     for d in params.values())
    room -= max((align(len(w)) for *_, w in items if w), default=0)
    scratch = 0
    spills: dict[int, list[str]] = {}
    in_place: dict[int, bool] = {}
    # cascades keep their buffers alive throughout, so they run only where that costs
    # no spill and leaves every weight its place in the cache (shortened until it does)
    chains = {si: cascade_chains(plan) if cascades else [] for si, plan in enumerate(plans)}
    held = sum(_pcache_bytes(params, w) for *_, params, w in items)

    def plan_segment(seg: Segment, plan: list[SegLayer], spans: list[Span]
                     ) -> tuple[int, int, bool, list[str]]:
        # with and without in-place element-wise layers: the buffers' lifetimes differ,
        # so either may need fewer spills; the fewest bytes over the link, then the
        # least scratch, wins
        tries = []
        for ip in (True, False):
            io = {v: 0 for v in seg.inputs + seg.outputs}
            _, peak = _plan_activations(seg, 0, 1 << 40, io, plan, in_place=ip, spans=spans)
            sp: list[str] = []
            if peak > room > 0:
                sp = _choose_spills(seg, plan, room, ip)
                io.update({v: 0 for v in sp})
                _, peak = _plan_activations(seg, 0, 1 << 40, io, plan, in_place=ip,
                                            spans=spans)
            tries.append((spill_bytes(seg, plan, sp), peak, not ip, sp))
            if not sp:
                break  # in place and nothing spilled: nothing to gain
        return min(tries, key=lambda t: t[:3])

    for si, seg in enumerate(segments):
        if fixed is not None:  # the second pass: the spans as picked
            best = plan_segment(seg, plans[si], fixed[si])
            if best[0] or best[1] + held > cfg.parameter_cache:
                raise _RingFailed
            chains[si] = fixed[si]
            _, peak, not_ip, sp = best
            spills[si], in_place[si] = sp, not not_ip
            scratch = max(scratch, peak)
            continue
        best = plan_segment(seg, plans[si], [])
        kept: list[Span] = []
        for a, z in chains[si]:  # chain by chain, beside those kept
            # too much alive at once: the chain keeps its longest start that fits (a
            # cascade's first convs, the ones the host input's transfer can hide, matter
            # most), found by bisection; with its intermediates whole, else (if that
            # keeps more of it) through rings
            fit = None
            for ring in (False, True)[:1 + rings]:
                lo, hi = (fit[0] + 1 if fit else a + 1), z
                while lo <= hi:
                    mid = (lo + hi) // 2
                    span = (a, mid, True) if ring else (a, mid)
                    spanned = plan_segment(seg, plans[si], [*kept, span])
                    if spanned[0] <= best[0] and spanned[1] + held <= cfg.parameter_cache:
                        fit, lo = (mid, spanned, span), mid + 1
                    else:
                        hi = mid - 1
                if fit is not None and fit[0] == z:
                    break
            if fit is not None:
                kept.append(fit[2])
                best = fit[1]
        chains[si] = kept
        _, peak, not_ip, sp = best
        spills[si], in_place[si] = sp, not not_ip
        scratch = max(scratch, peak)
    if pack:  # spend the parameter cache nothing else needs on packed weights
        sizes = {(si, li): _pcache_bytes(params, w) for si, li, params, w in items}
        # less a host output's ring, which lets its cascade stream it over the host queue
        # and an input's ring
        ring = max((sum(_stage_split(seg, plans[si], a, z)[2:]) for si, seg in
                    enumerate(segments) for a, z, *_ in chains[si]), default=0)
        packed = pack_pixels(cfg, plans,
                             cfg.parameter_cache - scratch - sum(sizes.values()) - ring, sizes)
        items = [it if packed[it[0]][it[1]] is plans[it[0]][it[1]]
                 else (it[0], it[1], *_images(cfg, packed[it[0]][it[1]])) for it in items]
        plans = packed
    param_top = 0
    param_addr: dict[tuple[int, int], dict[str, int]] = {}
    images: list[tuple[Space, int, bytes]] = []
    for si, li, params, _ in items:
        addrs = {}
        for key, data in params.items():
            addrs[key] = param_top
            images.append((Space.PCACHE, param_top, data))
            param_top += align(len(data))
        param_addr[(si, li)] = addrs
    staging = 0
    for _ in range(8):  # the staging area shrinks the budget, which may stream more
        budget = cfg.parameter_cache - param_top - scratch - staging
        top, cached_set, streamed_max = 0, set(), 0
        for si, li, _, w in items:
            if not w:
                continue
            if top + align(len(w)) <= budget:
                cached_set.add((si, li))
                top += align(len(w))
            else:
                streamed_max = max(streamed_max, align(len(w)))
        if streamed_max <= staging:
            break
        staging = streamed_max
    if budget < 0:
        # parameters are always cached: if they alone overflow, these layers must go; if
        # they and the largest weight's staging leave no scratch, layers with the most
        # parameter-cache bytes go; else activations overflow
        if param_top > cfg.parameter_cache:
            blame = _most_params(cfg, segments, param_top - cfg.parameter_cache)
        elif room <= 0:
            blame = _most_params(cfg, segments, 1 - room, weights=True)
        else:
            blame = [_largest(segments)]
        raise LowerError(f"parameters ({param_top} B) and activations ({scratch} B) exceed "
                         f"the {cfg.parameter_cache} B parameter cache of {cfg.name}",
                         blame[0], blame[1:])
    wgt_addr: dict[tuple[int, int], tuple[int, int | None]] = {}
    pc, host = param_top, 0
    cached = streamed = 0
    for si, li, _, w in items:
        if not w:
            continue
        if (si, li) in cached_set:
            images.append((Space.PCACHE, pc, w))
            wgt_addr[(si, li)] = (pc, None)
            pc += align(len(w))
            cached += len(w)
        else:
            images.append((Space.HOST, host, w))
            wgt_addr[(si, li)] = (-1, host)
            host += align(len(w))
            streamed += len(w)
    stage_addr = pc
    scratch_base = pc + staging
    # the host input a cascade's first conv reads, and the host output its last conv
    # writes, are staged in the parameter cache if the cache has room left, so their
    # transfers come in steps the cascade's others overtake (a copy) or go over the host
    # queue (XFERs); cascades are SYNCs apart, so they share one area
    room = cfg.parameter_cache - scratch_base - scratch - ALIGN
    # the largest that fits of: a chain's input and output together, or either alone
    size = max((n for si, seg in enumerate(segments) for a, z, *_ in chains[si]
                for n in _stage_sizes(seg, plans[si], a, z) if n <= room), default=0)
    stage = None
    if size:
        stage = (scratch_base + scratch, scratch_base + scratch + align(size), size)
        images.append((Space.PCACHE, stage[1], _i32(clamp_block(-128, 127))))
    lowered = []
    picks: dict[int, list[Span]] = {}
    for si, seg in enumerate(segments):
        ins: list[dict[str, Any]] = []
        outs: list[dict[str, Any]] = []
        for v, n in zip(seg.inputs, io_sizes[si][0]):
            ins.append({"name": v, "addr": host, "shape": list(seg.shapes[v])})
            host += align(n)
        host_out: dict[str, int] = {}
        for v, n in zip(seg.outputs, io_sizes[si][1]):
            outs.append({"name": v, "addr": host, "shape": list(seg.shapes[v])})
            host_out[v] = host
            host += align(n)
        host_io: dict[str, int] = {str(d["name"]): int(d["addr"]) for d in ins}
        host_io.update(host_out)
        for v in spills.get(si, []):
            host_io[v] = host
            host += align(seg.tensors[v].size)
        loc, _ = _plan_activations(seg, scratch_base, cfg.parameter_cache, host_io, plans[si],
                                   in_place=in_place[si], spans=chains[si])
        parts: list[list[Instr]] = []
        infos = []
        members: list[Member | None] = []
        plain: list[Any] = []
        for li, sl in enumerate(plans[si]):
            wa, sf = wgt_addr.get((si, li), (0, None))
            if wa == -1:
                wa = stage_addr
            key = layer_key(cfg, sl, [loc[v] for v in sl.inputs], loc[sl.output], sf is not None)
            args = (cfg, sl.layer, [loc[v] for v in sl.inputs], loc[sl.output],
                    param_addr[(si, li)], wa, sf, dataflow.get(sl.name))
            mp = mappings.get(key) if key else None
            try:
                try:
                    instrs = layer_program(*args, mp)
                except (ProgramError, IsaError):
                    if mp is None:
                        raise
                    mp = None
                    instrs = layer_program(*args)  # a stale tuned mapping: the default
            except (ProgramError, IsaError) as exc:
                raise LowerError(f"{sl.layer.kind} layer: {exc}", sl.origin or sl.layer) from None
            parts.append(instrs)
            infos.append(_layer_info(cfg, sl, instrs, sf is not None, key))
            mp = mp or Mapping()
            # in a cascade a conv runs band order (its tuned loop order was measured
            # alone), with its tuned dataflow and, if tuned in band order, band height
            plain.append(args[7])  # its dataflow without a tuned mapping
            members.append(None if sf is not None else Member(
                sl.layer.attrs.get("conv"), _conv_place(sl.layer, *args[2:7]),
                args[7] or mp.dataflow, param_addr[(si, li)].get("lut"),
                mp.band_rows if mp.order != "tile" else None)
                if sl.layer.kind == "conv" else None)
        prog, picked = _cascaded(cfg, seg.name, plans[si], chains[si], parts, infos, members,
                                 stage, loc, exact=fixed is not None, plain=plain)
        lowered.append(LoweredSegment(seg.name, prog + programs.end(), ins, outs, infos))
        # for a second pass: each cascade picked in a ringed span becomes a ringed span
        picks[si] = sorted([span for span in chains[si] if len(span) < 3] + [
            (a, z, True) for a, z in picked
            if any(len(sp) > 2 and sp[0] <= a and z <= sp[1] for sp in chains[si])])
    ringless = fixed is not None or all(len(sp) < 3 for c in chains.values() for sp in c)
    model = NpuModel(cfg.name, lowered, images, align(host), param_top, cached, streamed,
                     cfg.parameter_cache - scratch_base)
    return model, None if ringless else picks


def _ring_bytes(conv: Conv) -> int:
    """A host link's output ring for ``conv``: CASCADE_RING_SLOTS steps of its output
    at CASCADE_HOST_BANDS bands."""
    _, w, ch = conv.out_shape
    return CASCADE_RING_SLOTS * -(-conv.out_h // CASCADE_HOST_BANDS) * conv.phases * w * ch


def _in_ring_bytes(conv: Conv) -> int:
    """A host link's input ring for ``conv``: CASCADE_IN_SLOTS slots of CASCADE_IN_ROWS
    input rows (the whole input if that is smaller)."""
    return min(conv.h, CASCADE_IN_SLOTS * CASCADE_IN_ROWS) * conv.w * conv.cin


def _stage_split(seg: Segment, plan: list[SegLayer], a: int, z: int
                 ) -> tuple[int, int, int, int]:
    """Bytes of the chain (a, z)'s host input, host output, output ring and input ring
    (0 where it has none; an input no larger than its ring has none)."""
    inp, out = plan[a].inputs[0], plan[z].output
    on_host, from_host = out in seg.outputs, inp in seg.inputs
    size = seg.tensors[inp].size if from_host else 0
    in_ring = _in_ring_bytes(plan[a].layer.attrs["conv"]) if from_host else 0
    return (size, seg.tensors[out].size if on_host else 0,
            _ring_bytes(plan[z].layer.attrs["conv"]) if on_host else 0,
            in_ring if in_ring < size else 0)


def _stage_sizes(seg: Segment, plan: list[SegLayer], a: int, z: int) -> list[int]:
    """The staging areas the chain (a, z) can use: its host input (whole or its ring)
    beside its host output (whole or its ring; not two rings), or any one of them."""
    inp, out, ring, in_ring = _stage_split(seg, plan, a, z)
    before, ring_in = (align(inp) if inp else 0), (align(in_ring) if in_ring else 0)
    return [n for n in (before + out, before + ring, ring_in + out, inp, in_ring, out, ring)
            if n]


def _linked(members: list[Member], stage: tuple[int, int, int]
            ) -> tuple[list[Member], HostLink] | None:
    """``members`` with the first's host input and the last's host output moved to the
    staging area, and the ``HostLink`` that carries them; None if neither is on the host,
    another member uses the link (one section cannot share it), or they do not fit.
    Each is staged whole where it fits, else in a ring (``HostLink.slots`` for the
    output, ``in_slots`` for the input; not both)."""
    first, last = members[0], members[-1]
    c = first.conv
    inp = c.h * c.w * c.cin if first.place.inp[0] == Space.HOST else 0
    out = int(np.prod(last.out_shape)) if last.place.out[0] == Space.HOST else 0
    others = [m.place.inp for m in members[1:]] + [m.place.out for m in members[:-1]]
    if (not inp and not out) or any(loc[0] == Space.HOST for loc in others):
        return None
    ins = [(align(inp) if inp else 0, 0)]
    if inp and _in_ring_bytes(c) < inp:
        ins.append((align(_in_ring_bytes(c)), CASCADE_IN_SLOTS))
    outs = [(out, 0)] + ([(_ring_bytes(last.conv), CASCADE_RING_SLOTS)] if out else [])
    fits = [(before, k_in, after, slots) for (before, k_in), (after, slots)
            in product(ins, outs) if before + after <= stage[2] and not (k_in and slots)]
    if not fits:
        return None
    before, k_in, after, slots = fits[0]  # whole before rings, the input's ring last
    ms = list(members)
    at_out = stage[0] + before
    if inp:
        ms[0] = replace(first, place=replace(first.place, inp=(Space.PCACHE, stage[0])))
    if out:  # in short steps that leave as they are stored (not a tuned band height)
        ms[-1] = replace(ms[-1], place=replace(last.place, out=(Space.PCACHE, at_out)),
                         band_rows=None)
    return ms, HostLink((first.place.inp[1], stage[0]) if inp else None,
                        (at_out, last.place.out[1]) if out else None, slots,
                        after // CASCADE_RING_SLOTS if slots else 0, k_in,
                        CASCADE_IN_ROWS if k_in else 0)


def _cascaded(cfg: NpuConfig, name: str, plan: list[SegLayer], chains: list[Span],
              parts: list[list[Instr]], infos: list[dict[str, Any]],
              members: list[Member | None], stage: tuple[int, int, int] | None = None,
              loc: dict[str, Loc] | None = None, exact: bool = False,
              plain: list[Any] | None = None) -> tuple[list[Instr], list[tuple[int, int]]]:
    """The segment's program: its layers' ``parts`` in order, with each chain of
    cascadable members (streamed weights break a chain) run as one ``cascade`` where that
    takes fewer cycles than its layers one by one. A cascade whose first conv reads the
    host or whose last conv writes it also tries those transfers over the host queue
    (``_linked``), or, where that cannot be, a ``cascade.Copy`` of the input first; both
    stage in ``stage`` (PCACHE address, the address of a copy's CLAMP block, bytes it
    holds). Each member's ``infos`` entry names its cascade and the cascade's cycles.

    In a ringed span the intermediates ``ringed`` names go through their rings (at
    ``loc[ring_key(v)]``) and have no place of their own: the cascades picked there are
    timed, not to be run (``lower``'s first pass), and with ``exact`` (its second) the
    span is one cascade. Returns the program and the (first, last) layer of each
    cascade."""
    loc = loc or {}
    plain = plain or [m.dataflow if m is not None else None for m in members]
    timed: dict[Any, int] = {}
    runs: list[tuple[int, int, dict[str, int], Span]] = []
    for span in chains:
        a, z = span[0], span[1]
        rings = {v: n for v, n in ringed(plan, span).items() if ring_key(v) in loc}
        i = a
        while i <= z:
            j = i
            while j <= z and members[j] is not None:
                j += 1
            if j - i >= 2:
                runs.append((i, j - 1, rings, span))
            i = j + 1

    def trial(a: int, z: int, rings: dict[str, int], live: set[Any] | None = None
              ) -> tuple[int, int, list[Instr], HostLink | None, int] | None:
        """The fastest of the ways to run (a, z) as a cascade (only those in ``live``,
        if given; each one's cycles in ``timed``)."""
        timed.clear()
        post = [partial(with_rounding, rnd=rounding.of_attrs(sl.layer.attrs))
                for sl in plan[a:z + 1]]
        ms = [m for m in members[a:z + 1] if m is not None]  # runs hold members only
        tuned = any(m.band_rows or m.dataflow != plain[a + k] for k, m in enumerate(ms))
        inner = [k for k in range(len(ms) - 1) if plan[a + k].output in rings]
        for k in inner:
            v = plan[a + k].output
            at = loc[ring_key(v)]
            ms[k] = replace(ms[k], place=replace(ms[k].place, out=at), ring=rings[v])
            ms[k + 1] = replace(ms[k + 1], place=replace(ms[k + 1].place, inp=at))
        first, last = ms[0], ms[-1]
        # (members, their post, host link, bands at least), each tried with every
        # CASCADE_BUFFERS
        tries: list[tuple[list[Any], list[Any], HostLink | None, int]] = [
            (ms, post, None, CASCADE_BANDS)]
        linked = _linked(ms, stage) if stage is not None else None
        # a ring's slots hold steps of CASCADE_HOST_BANDS bands at most
        ring = bool(linked and linked[1].slots)
        if linked and linked[1].inp is not None:
            # the first conv follows the rows as they arrive over the host queue
            lms, link = linked
            tries += [([replace(lms[0], band_rows=rows), *lms[1:]], post, link, nb)
                      for rows in CASCADE_LINK_ROWS
                      for nb in ((CASCADE_HOST_BANDS,) if ring else CASCADE_LINK_BANDS)]
        elif linked:  # the output over the host queue: short steps leave sooner
            tries += [(linked[0], post, linked[1], nb) for nb in
                      ((CASCADE_HOST_BANDS,) if ring else
                       tuple(sorted({*CASCADE_LINK_BANDS, CASCADE_HOST_BANDS})))]
        elif last.place.out[0] == Space.HOST:
            tries.append((ms, post, None, CASCADE_HOST_BANDS))
        c = first.conv
        if (not linked and stage is not None and first.place.inp[0] == Space.HOST
                and c.h * c.w * c.cin <= stage[2]):  # a spilled input may be larger
            for rows in CASCADE_COPY_ROWS:
                copy = Copy(c.h, c.w, c.cin, first.place.inp, (Space.PCACHE, stage[0]),
                            stage[1], rows)
                staged = replace(first, place=replace(first.place, inp=copy.dst))
                tries.append(([copy, staged, *ms[1:]], [None, *post], None, CASCADE_BANDS))
        # tuned mappings were measured with each conv alone: every way is also tried with
        # the default dataflows, and the bands at least deciding the heights (a linked
        # first conv keeps its rows)
        def untuned(tms: list[Any], link: HostLink | None) -> list[Any]:
            lead = int(isinstance(tms[0], Copy))  # a copy first: the members follow it
            return tms[:lead] + [
                replace(m, dataflow=plain[a + k], band_rows=(
                    m.band_rows if k == 0 and link is not None else None))
                for k, m in enumerate(tms[lead:])]

        ways = [(*way, False) for way in tries] + [
            (untuned(tms, link), pp, link, nb, True) for tms, pp, link, nb in tries if tuned]
        best = None
        # a way's key names it at any length (``live``)
        for (tms, pp, link, nb, dflt), nbuf in product(ways, CASCADE_BUFFERS):
            key = (type(tms[0]).__name__, tms[0].band_rows if isinstance(tms[0], Member)
                   else tms[0].rows, link is not None, nb, nbuf, dflt)
            if live is not None and key not in live:
                continue
            try:
                prog = cascade_program(cfg, tms, pp, nb, nbuf, link)
            except (ProgramError, IsaError):
                continue  # no shared buffer layout
            together = simulate(cfg, prog + programs.end()).cycles
            timed[key] = together
            if best is None or together < best[0]:
                best = (together, sum(int(ly["cycles"]) for ly in infos[a:z + 1]), prog, link,
                        len(inner))
        return best

    # from each start, the longest cascade that saves the most cycles; a cascade that
    # grows by two layers without saving more stops growing
    picked: list[tuple[int, int, int, int, list[Instr], HostLink | None, int]] = []
    for a0, z0, rings, span in runs:
        if exact and len(span) > 2:  # a second pass's ringed span: it, whole, or nothing
            t = trial(a0, z0, rings) if (a0, z0) == span[:2] else None
            if t is None:
                raise _RingFailed
            picked.append((a0, z0, *t))
            continue
        a = a0
        while a < z0:
            best, misses = None, 0
            live = None
            for z in range(a + 1, z0 + 1):
                t = trial(a, z, rings, live)
                if rings and not exact and t:
                    # a first pass's ringed span grows long: each longer cascade is
                    # tried only the ways within CASCADE_PRUNE of the fastest so far
                    live = {k for k, c in timed.items() if c <= t[0] * CASCADE_PRUNE}
                if t and t[1] - t[0] > (best[3] - best[2] if best else 0):
                    best, misses = (a, z, *t), 0
                elif (misses := misses + 1) >= 2:
                    break
            if best is None:
                a += 1
                continue
            picked.append(best)
            a = best[1] + 1
    out: dict[int, list[Instr]] = {}
    for a, z, together, alone, prog, link, nrings in picked:
        out[a] = prog
        group = {"name": f"{name}/cascade{len(out) - 1}", "layers": z - a + 1,
                 "cycles": together, "alone_cycles": alone}
        if nrings:  # intermediates through row rings
            group["rings"] = nrings
        if link is not None:  # what crosses the host link on the host queue
            group["host_queue"] = [w for w, x in (("in", link.inp), ("out", link.out)) if x]
        for i in range(a, z + 1):
            infos[i]["cascade"] = group
            parts[i] = []
    prog: list[Instr] = []
    for i, part in enumerate(parts):
        prog += out.get(i, part)
    return prog, [(a, z) for a, z, *_ in picked]


def _images(cfg: NpuConfig, sl: SegLayer) -> tuple[dict[str, bytes], bytes]:
    params, w = layer_images(cfg, sl.layer)
    if sl.lut is not None:
        params["lut"] = _i32(lut_block(sl.lut.arrays["table"]))
    if sl.scale is not None:
        params["mul"] = _mul_block(sl.scale.attrs)
    if sl.residual is not None:
        params["add"] = _add_block(sl.residual.attrs)
    return params, w


def layer_key(cfg: NpuConfig, sl: SegLayer, inputs: list[Loc], out: Loc,
              streamed: bool) -> str | None:
    """The ``workload_key`` of a conv / global-pool layer at its places (else None)."""
    if sl.layer.kind == "conv":
        return workload_key(cfg.name, sl.layer.attrs["conv"], inputs[0][0], out[0], streamed,
                            sl.lut is not None, scale=sl.scale is not None,
                            residual=inputs[-1][0] if sl.residual is not None else False)
    if sl.layer.kind == "gap":
        return workload_key(cfg.name, sl.layer.attrs["conv"], Space.PCACHE, out[0],
                            kind="gap")
    return None


def _most_params(cfg: NpuConfig, segments: list[Segment], excess: int,
                 weights: bool = False) -> list[Layer]:
    """The fewest layers whose parameter blocks (always cached; with ``weights``, and
    their weights) add up to ``excess`` bytes, largest first: any placement must leave at
    least that much on the CPU, and leaving them all at once takes one re-partition
    instead of one per layer. (An error path: the blocks are made again, per
    partitioned layer, unfused.)"""
    def size(layer: Layer) -> int:
        params, w = layer_images(cfg, layer)
        return _pcache_bytes(params, w if weights else b"")

    sizes = sorted(((size(sl.layer),
                     sl.origin or sl.layer) for seg in segments for sl in seg.layers),
                   key=lambda t: -t[0])
    out: list[Layer] = []
    held = 0
    for size, layer in sizes:
        if out and held >= excess:
            break
        out.append(layer)
        held += size
    return out


def _largest(segments: list[Segment]) -> Layer | None:
    """The layer with the most activation bytes (to leave on the CPU when they do not fit)."""
    best: tuple[int, Layer | None] = (-1, None)
    for seg in segments:
        for sl in seg.layers:
            size = sl.layer.out.size + sum(t.size for t in sl.layer.inputs)
            if size > best[0]:
                best = (size, sl.origin or sl.layer)
    return best[1]


def _layer_info(cfg: NpuConfig, sl: SegLayer, instrs: list[Instr],
                streamed: bool, key: str | None = None) -> dict[str, Any]:
    """Per-layer figures for the report (timing-only simulation of the layer alone)."""
    ly = sl.layer
    cycles = simulate(cfg, instrs + programs.end()).cycles if instrs else 0
    parts = [p.layer for p in ly.attrs["parts"]] if ly.kind == "se" else [ly]
    macs = sum(p.macs for p in parts if p.kind == "conv")
    conv = ly.attrs.get("conv")
    info: dict[str, Any] = {
        "name": sl.name, "kind": ly.kind,
        "ops": (list(sl.scale.ops) if sl.scale is not None else []) + list(ly.ops) +
        (list(sl.lut.ops) if sl.lut is not None else []) +
        (list(sl.residual.ops) if sl.residual is not None else []), "macs": macs,
        "cycles": cycles, "utilization": macs / (cycles * cfg.peak_macs_per_cycle)
        if cycles else 0.0, "weights": sum(int(p.arrays["weights"].size) for p in parts
                                           if "weights" in p.arrays), "streamed": streamed,
        "instructions": len(instrs), "fused_lut": sl.lut is not None,
        "fused_scale": sl.scale is not None, "fused_residual": sl.residual is not None}
    if key is not None:
        info["workload"] = key
    if sl.into is not None:  # stores into a concat's output
        info["into_concat"] = True
    if "up" in ly.attrs:  # reads an upsample's input (``fusion.fuse_upsample_add``)
        info["fused_resize"] = True
    if ly.attrs.get("in_place"):  # inputs its producers wrote in place
        info["inputs_in_place"] = len(ly.attrs["in_place"])
    if isinstance(conv, Conv) and ly.kind == "conv":
        info["shape"] = {"h": conv.h, "w": conv.w, "cin": conv.cin, "cout": conv.cout,
                         "k": [conv.kh, conv.kw], "stride": [conv.sh, conv.stride],
                         "depthwise": conv.depthwise}
        df = next((i.df for i in instrs if i.op == Op.GEMM), None)
        info["dataflow"] = Dataflow(df).name.lower() if df is not None else "-"
        info["pack"] = conv.pack  # output pixels per array pass
    return info


__all__ = ["LowerError", "LoweredSegment", "NpuModel", "SegLayer", "Segment", "fits",
           "layer_images", "layer_key", "layer_program", "lower", "model_cycles", "signature"]
