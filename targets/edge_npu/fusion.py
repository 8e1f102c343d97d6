"""Fusion of a segment's layers before lowering: fewer layers, launches and activation
round trips, the same integers.

Each pass takes the layer list and the segment's outputs and returns a new list; a
fused layer keeps the name and output of the layer it replaces, and ``origin`` names the
partitioned layer to blame if it cannot be lowered. The segment keeps its unfused layers,
so lowered programs are checked against the unfused integer reference
(``int_reference``). ``fuse`` runs them all in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from . import programs, rounding
from .layers import Layer
from .vector_layers import replicable, upsampled_fits

if TYPE_CHECKING:
    from .lower import SegLayer


def _readers(layers: list[SegLayer]) -> dict[str, int]:
    """How many layers read each value."""
    readers: dict[str, int] = {}
    for sl in layers:
        for v in sl.inputs:
            readers[v] = readers.get(v, 0) + 1
    return readers


def fuse(layers: list[SegLayer], outputs: list[str], bank: int | None = None
         ) -> list[SegLayer]:
    """Every fusion, in the order each needs: gated LUTs fold and LUT chains compose
    before a LUT joins its conv; ``y + x * s`` pairs take their muls before a conv
    would, then an add after them; a conv takes the add after it (after its LUT and
    scale); an add left takes an upsample it reads (``bank``: the activation bank it
    must fit); a global pool takes the one-pixel convs after it (with their LUTs); last,
    a concat's inputs are written in place by the layers that make them."""
    luts = fuse_luts(compose_luts(fold_gated_luts(layers, outputs), outputs), outputs)
    muladds = fuse_muladd_add(fuse_mul_add(luts, outputs), outputs)
    convs = fuse_pixel_chains(fuse_upsample_add(fuse_conv_add(
        fuse_scale_conv(muladds, outputs), outputs), outputs, bank), outputs)
    return fuse_concat_inputs(convs, outputs)


def fold_gated_luts(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """``mul(x, lut(x))`` (hard-swish as x * hard-sigmoid(x), SiLU as x * sigmoid(x)),
    where the LUT's output has no other reader, is a function of the int8 ``x`` alone:
    one LUT whose 256 entries are the integer MUL of each x with its table entry
    (bit-exact by construction). One layer instead of two."""
    def one(m: SegLayer, pos: int, gate: SegLayer) -> SegLayer | None:
        x = gate.inputs[0]
        if gate.layer.kind != "lut" or m.inputs[1 - pos] != x:
            return None
        at = m.layer.attrs
        xs = np.arange(-128, 128, dtype=np.int64)
        hs = gate.layer.arrays["table"][xs + 128]
        a, b = (hs, xs) if pos == 0 else (xs, hs)
        table = rounding.mul_int8(a, at["zp1"], b, at["zp2"], at["mult"], at["shift"],
                                  at["zp_out"], at["qmin"], at["qmax"],
                                  rounding.of_attrs(at)).astype(np.int8)
        lut = Layer("lut", [gate.layer.inputs[0]], m.layer.out, arrays={"table": table},
                    ops=list(gate.layer.ops) + list(m.layer.ops))
        return replace(m, layer=lut, inputs=[x])

    return _fuse_into(layers, outputs, lambda m: m.layer.kind == "mul"
                      and not m.layer.attrs.get("broadcast"), one)


def compose_luts(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """A LUT whose input comes from another LUT that nothing else reads (and is not a
    segment output) is one table: ``t2[t1[x]]``. Every LUT maps int8 to int8, so the
    composition is exact. It takes the first LUT's place, so a chain after a conv (PP-OCR
    det's affine, then hard-swish folded to one table, then ``/ 6`` and another affine)
    still follows the conv and fuses into it."""
    readers = _readers(layers)
    out: list[SegLayer | None] = list(layers)
    made_by: dict[str, int] = {}  # value -> index in ``out`` of the LUT that writes it
    for i, sl in enumerate(layers):
        if sl.layer.kind != "lut":
            continue
        v = sl.inputs[0]
        p = made_by.get(v)
        if p is not None and readers.get(v) == 1 and v not in outputs:
            first = out[p]
            assert first is not None
            table = sl.layer.arrays["table"][first.layer.arrays["table"].astype(np.int64) + 128]
            lut = Layer("lut", first.layer.inputs, sl.layer.out, arrays={"table": table},
                        ops=list(first.layer.ops) + list(sl.layer.ops))
            out[p] = replace(sl, layer=lut, inputs=first.inputs, origin=sl.origin or sl.layer)
            out[i] = None
            made_by[sl.output] = p
        else:
            made_by[sl.output] = i
    return [sl for sl in out if sl is not None]


def fuse_luts(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """A conv directly followed by a LUT that is the only reader of its output (not a
    segment output) becomes one layer: the conv program applies the table to each
    requantized tile before the store. Same integer result (requantize, clamp, table),
    one launch and one activation round trip fewer."""
    readers = _readers(layers)
    out: list[SegLayer] = []
    i = 0
    while i < len(layers):
        sl = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if (sl.layer.kind == "conv" and sl.lut is None and nxt is not None
                and nxt.layer.kind == "lut" and nxt.inputs == [sl.output]
                and readers.get(sl.output) == 1 and sl.output not in outputs):
            out.append(replace(sl, output=nxt.output, lut=nxt.layer))
            i += 2
            continue
        out.append(sl)
        i += 1
    return out


def _fuse_into(layers: list[SegLayer], outputs: list[str],
               takes: Callable[[SegLayer], bool],
               fuse_one: Callable[[SegLayer, int, SegLayer], SegLayer | None]
               ) -> list[SegLayer]:
    """For each layer that ``takes`` whose input ``pos`` comes from an earlier layer that
    nothing else reads and that is not a segment output, ``fuse_one(layer, pos,
    producer)`` returns the layer that takes the consumer's place (the producer goes),
    or None."""
    readers = _readers(layers)
    made_by = {sl.output: i for i, sl in enumerate(layers)}
    out: list[SegLayer | None] = list(layers)
    for j, consumer in enumerate(layers):
        if not takes(consumer):
            continue
        for pos, v in enumerate(consumer.inputs):
            i = made_by.get(v)
            producer = out[i] if i is not None and i < j else None
            if producer is None or readers.get(v) != 1 or v in outputs:
                continue
            fused = fuse_one(consumer, pos, producer)
            if fused is not None:
                out[j], out[i] = fused, None
                break
    return [sl for sl in out if sl is not None]


def _full_add(sl: SegLayer) -> bool:
    """An add of two full tensors (not a per-channel broadcast)."""
    return sl.layer.kind == "add" and not sl.layer.attrs.get("broadcast")


def _same_rounding(a: SegLayer, b: SegLayer) -> bool:
    return rounding.of_attrs(a.layer.attrs) == rounding.of_attrs(b.layer.attrs)


def fuse_mul_add(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """``add(y, mul(x, s))`` with ``s`` a per-channel vector (squeeze-excite's scale; the
    residual ``x + x * se(x)`` of PP-OCR det's RSE blocks has ``y = x``), where the mul's
    output has no other reader and is not a segment output, becomes one ``muladd``
    layer at the add's place: each chunk of pixels is loaded once, the vector unit runs
    the MUL and then the ADD on the bank, and one store writes the sum. The same two
    integer ops as before; one launch, one store and one to two loads fewer."""
    def one(add: SegLayer, pos: int, mul: SegLayer) -> SegLayer | None:
        if (mul.layer.kind != "mul" or not mul.layer.attrs.get("broadcast")
                or not _same_rounding(mul, add)):
            return None
        x, s = mul.inputs
        y = add.inputs[1 - pos]
        tx, ts = mul.layer.inputs
        ty = add.layer.inputs[1 - pos]
        ins, tensors = ([x, s], [tx, ts]) if y == x else ([x, s, y], [tx, ts, ty])
        fused = Layer("muladd", tensors, add.layer.out,
                      {"mul": mul.layer.attrs, "add": add.layer.attrs, "mul_first": pos == 0,
                       "y": 0 if y == x else 2,
                       "rounding": add.layer.attrs.get("rounding", "gemmlowp")},
                      ops=list(mul.layer.ops) + list(add.layer.ops))
        return replace(add, layer=fused, inputs=ins, origin=add.origin or add.layer)

    return _fuse_into(layers, outputs, _full_add, one)


def fuse_muladd_add(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """``add(muladd(...), r)`` (either order; PP-OCR det's FPN: an RSE block's
    ``x + x * s`` plus the upsampled coarser level), where the muladd's output has no
    other reader and is not a segment output, is the muladd with a third step: the
    vector unit adds r, loaded beside x, to the sum in the bank before the store. The
    same integer ADD; one launch, one store and one load fewer."""
    def one(add: SegLayer, pos: int, ma: SegLayer) -> SegLayer | None:
        if (ma.layer.kind != "muladd" or "add2" in ma.layer.attrs
                or not _same_rounding(ma, add)):
            return None
        at = {**ma.layer.attrs, "add2": add.layer.attrs, "add2_first": pos == 0}
        fused = Layer("muladd", [*ma.layer.inputs, add.layer.inputs[1 - pos]], add.layer.out,
                      at, ops=list(ma.layer.ops) + list(add.layer.ops))
        return replace(add, layer=fused, inputs=[*ma.inputs, add.inputs[1 - pos]],
                       origin=add.origin or add.layer)

    return _fuse_into(layers, outputs, _full_add, one)


def fuse_upsample_add(layers: list[SegLayer], outputs: list[str], bank: int | None = None
                      ) -> list[SegLayer]:
    """An add of two full tensors, or a muladd's last add (PP-OCR det's FPN: a level
    plus the coarser one upsampled), whose operand is a nearest upsample (``resize``)
    that nothing else reads and that is not a segment output, reads the upsample's input
    instead (``attrs["up"]``: (operand, factor); the upsample's table, if its scale
    changes, as ``arrays["up_table"]``): ``vector_layers.upsampled_layer`` upsamples it
    on the way, so the upsampled tensor is never stored or loaded. The same integers
    (a nearest upsample only copies or maps pixels); one layer, its store and a
    full-size load fewer. ``bank``: only where a chunk of one input row fits it."""
    def takes(sl: SegLayer) -> bool:
        return _full_add(sl) or (sl.layer.kind == "muladd" and "add2" in sl.layer.attrs)

    def one(add: SegLayer, pos: int, rs: SegLayer) -> SegLayer | None:
        ly = add.layer
        if (rs.layer.kind != "resize" or "up" in ly.attrs or "out_pitch" in rs.layer.attrs
                or (ly.kind == "muladd" and pos != len(add.inputs) - 1)):
            return None
        f = rs.layer.attrs["factor"]
        _, w, c = ly.out.shape
        broadcast = ly.kind == "muladd"
        full = len(add.inputs) - 1 - int(broadcast)
        if f < 2 or (bank is not None and not upsampled_fits(bank, w, c, f, full, broadcast)):
            return None
        tensors = list(ly.inputs)
        tensors[pos] = rs.layer.inputs[0]
        arrays = dict(ly.arrays)
        if "table" in rs.layer.arrays:
            arrays["up_table"] = rs.layer.arrays["table"]
        fused = replace(ly, inputs=tensors, attrs={**ly.attrs, "up": (pos, f)}, arrays=arrays,
                        ops=list(rs.layer.ops) + list(ly.ops))
        ins = list(add.inputs)
        ins[pos] = rs.inputs[0]
        return replace(add, layer=fused, inputs=ins, origin=add.origin or ly)

    return _fuse_into(layers, outputs, takes, one)


def fuse_scale_conv(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """``conv(mul(x, s))`` with ``s`` a per-channel vector (squeeze-excite's scale before
    the block's 1x1 projection, PP-OCR cls), where the mul's output has no other reader
    and is not a segment output and the conv has no padding (the DMA would pad with the
    scaled tensor's zero point before the scale), becomes the conv with ``scale``: its
    program multiplies each input band by s in place (VEC MUL) before the GEMMs. The
    same integers; one launch and one activation round trip fewer."""
    def takes(sl: SegLayer) -> bool:
        conv = sl.layer.attrs.get("conv") if sl.layer.kind == "conv" else None
        return (conv is not None and sl.scale is None and not any(conv.pad)
                and len(sl.inputs) == 1 and not programs.long_k(conv))

    def one(conv: SegLayer, pos: int, mul: SegLayer) -> SegLayer | None:
        if (mul.layer.kind != "mul" or not mul.layer.attrs.get("broadcast")
                or not _same_rounding(mul, conv)):
            return None
        return replace(conv, inputs=list(mul.inputs), scale=mul.layer,
                       origin=conv.origin or conv.layer)

    return _fuse_into(layers, outputs, takes, one)


_SWAP = {"zp1": "zp2", "mult1": "mult2", "shift1": "shift2"}


def fuse_conv_add(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """``add(conv(x), y)`` (either order; a residual connection, PP-OCR cls's blocks),
    where the conv's output (after any fused LUT) has no other reader and is not a
    segment output, becomes the conv with ``residual``: each requantized output tile is
    added to the same tile of y, loaded beside it, before the store. The conv moves to
    the add's place (y may be made after it). The ADD's operands are put conv-first,
    its parameters swapped to match if needed: both terms are rescaled on their own and
    summed exactly, so the order does not change the integers. One launch, one store
    and two loads fewer."""
    def one(add: SegLayer, pos: int, conv: SegLayer) -> SegLayer | None:
        c = conv.layer.attrs.get("conv") if conv.layer.kind == "conv" else None
        if (c is None or conv.residual is not None or c.phases > 1 or programs.long_k(c)
                or not _same_rounding(conv, add)):
            return None
        at = dict(add.layer.attrs)
        if pos == 1:  # conv output second: swap the operands' parameters
            for a, b in _SWAP.items():
                at[a], at[b] = at[b], at[a]
        y = add.inputs[1 - pos]
        residual = replace(add.layer, attrs=at,
                           inputs=[add.layer.inputs[pos], add.layer.inputs[1 - pos]])
        return replace(conv, inputs=[*conv.inputs, y], output=add.output, residual=residual,
                       origin=conv.origin or conv.layer)

    return _fuse_into(layers, outputs, _full_add, one)


def _pixel_conv(sl: SegLayer) -> bool:
    """A 1x1 dense conv of one pixel without a fused scale or residual (its LUT may be)."""
    c = sl.layer.attrs.get("conv") if sl.layer.kind == "conv" else None
    return (c is not None and c.h == c.w == c.kh == c.kw == 1 and not c.depthwise
            and c.phases == 1 and c.pack == 1 and sl.scale is None and sl.residual is None)


def fuse_pixel_chains(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """A global pool followed by one-pixel 1x1 convs (squeeze-excite: pool, conv + ReLU,
    conv + hard-sigmoid), each the only reader of the one before and none a segment
    output, with the same rounding, becomes one ``se`` layer at the pool's place:
    ``pixel_chain`` keeps the pooled vector and each conv's output in the activation
    bank, and only the last is stored. The same integer passes; two launches and two
    store / load round trips fewer per block."""
    readers = _readers(layers)
    first_reader: dict[str, int] = {}
    for i, sl in enumerate(layers):
        for v in sl.inputs:
            first_reader.setdefault(v, i)
    chains: dict[int, list[SegLayer]] = {}  # index of the pool -> the whole chain
    gone: set[int] = set()
    for i, sl in enumerate(layers):
        if sl.layer.kind != "gap" or sl.lut is not None:
            continue
        chain, v = [sl], sl.output
        while readers.get(v) == 1 and v not in outputs:
            at = first_reader[v]
            nxt = layers[at]
            if not _pixel_conv(nxt) or not _same_rounding(sl, nxt):
                break
            chain.append(nxt)
            gone.add(at)
            v = nxt.output
        if len(chain) > 1:
            chains[i] = chain
    out = []
    for i, sl in enumerate(layers):
        if i in gone:
            continue
        chain = chains.get(i)
        if chain is None:
            out.append(sl)
            continue
        ops = [op for c in chain for op in
               list(c.layer.ops) + (list(c.lut.ops) if c.lut is not None else [])]
        last = chain[-1]
        fused = Layer("se", list(chain[0].layer.inputs),
                      last.lut.out if last.lut is not None else last.layer.out,
                      {"parts": chain, "rounding": chain[0].layer.attrs.get("rounding",
                                                                             "gemmlowp")},
                      ops=ops)
        stem = chain[0].name.rsplit(".", 1)[0]  # "npu0/006.gap" -> "npu0/006.se"
        out.append(replace(chain[0], name=f"{stem}.se", layer=fused, output=last.output,
                           origin=chain[0].origin or chain[0].layer))
    return out


# kinds whose program can store its output pixels a pitch apart, through a last LUT
PITCHED = ("resize", "lut", "copy", "add", "mul", "muladd")


def fuse_concat_inputs(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """A concat input made by a vector layer (resize, LUT, copy, add, mul, muladd) that
    nothing else reads, not a segment output and not listed twice, is written straight
    into the concat's output: the producer stores its pixels at the input's channel
    offset, the concat's channels apart (``SegLayer.into``; ``attrs["out_pitch"]``),
    through the concat's table for that input composed with its own last one (a
    resize's or LUT's table, else a LUT step after its ADD / MUL). A resize takes part
    only where whole output rows fit the STORE fields (``replicable``). The concat then
    copies only the other inputs (``attrs["in_place"]``), or nothing. Every table maps
    int8 to int8, so the composition is exact; PP-OCR det's FPN concat (four 80x80x24
    inputs at 320) goes, a one-cycle-per-pixel store of each input fewer."""
    readers = _readers(layers)
    made_by = {sl.output: i for i, sl in enumerate(layers)}
    out = list(layers)
    for j, cat in enumerate(layers):
        if cat.layer.kind != "concat":
            continue
        total = cat.layer.out.shape[2]
        taken, off = [], 0
        for k, (v, t) in enumerate(zip(cat.inputs, cat.layer.inputs)):
            i = made_by.get(v, -1)
            p = out[i] if 0 <= i < j else None
            if (p is not None and p.layer.kind in PITCHED and p.into is None
                    and (p.layer.kind != "resize" or replicable(
                        t.shape[1] // p.layer.attrs["factor"], p.layer.attrs["factor"], total))
                    and p.layer.attrs.get("up", (0, 1))[1] * total < 1 << 14
                    and readers.get(v) == 1 and v not in outputs
                    and cat.inputs.count(v) == 1):
                out[i] = replace(p, layer=_into_layer(p.layer, cat.layer.arrays[f"table{k}"],
                                                      total),
                                 into=(cat.output, off), origin=p.origin or p.layer)
                taken.append(k)
            off += t.shape[2]
        if taken:
            at = {**cat.layer.attrs, "in_place": tuple(taken)}
            out[j] = replace(cat, layer=replace(cat.layer, attrs=at))
    return out


def _into_layer(ly: Layer, table: np.ndarray, pitch: int) -> Layer:
    """``ly`` storing its pixels ``pitch`` channels apart, with ``table`` applied last."""
    at = {**ly.attrs, "out_pitch": pitch}
    ident = np.arange(-128, 128)
    if ly.kind == "copy":  # a CLAMP copy: just the table
        return Layer("lut", ly.inputs, ly.out, at, {"table": table}, list(ly.ops))
    arrays = dict(ly.arrays)
    if ly.kind in ("resize", "lut"):
        first = arrays.get("table", ident)
        arrays["table"] = table[np.asarray(first, dtype=np.int64) + 128]
        if np.array_equal(arrays["table"], ident):
            del arrays["table"]
    elif not np.array_equal(table, ident):
        arrays["table"] = table  # a LUT step after the element-wise ops
    if ly.kind == "lut" and "table" not in arrays:
        arrays["table"] = ident  # a LUT layer keeps a table
    return replace(ly, attrs=at, arrays=arrays)
