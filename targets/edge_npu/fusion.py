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

from . import rounding
from .layers import Layer

if TYPE_CHECKING:
    from .lower import SegLayer


def _readers(layers: list[SegLayer]) -> dict[str, int]:
    """How many layers read each value."""
    readers: dict[str, int] = {}
    for sl in layers:
        for v in sl.inputs:
            readers[v] = readers.get(v, 0) + 1
    return readers


def fuse(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """Every fusion, in the order each needs: gated LUTs fold and LUT chains compose
    before a LUT joins its conv; ``y + x * s`` pairs take their muls before a conv
    would; a conv takes the add after it last (after its LUT and scale)."""
    luts = fuse_luts(compose_luts(fold_gated_luts(layers, outputs), outputs), outputs)
    return fuse_conv_add(fuse_scale_conv(fuse_mul_add(luts, outputs), outputs), outputs)


def fold_gated_luts(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """``mul(x, lut(x))`` (hard-swish as x * hard-sigmoid(x), SiLU as x * sigmoid(x)),
    where the LUT's output has no other reader, is a function of the int8 ``x`` alone:
    one LUT whose 256 entries are the integer MUL of each x with its table entry
    (bit-exact by construction). One layer instead of two."""
    readers = _readers(layers)
    drop: set[int] = set()
    out = list(layers)
    for i, sl in enumerate(layers):
        if sl.layer.kind != "lut" or readers.get(sl.output) != 1 or sl.output in outputs:
            continue
        x, h = sl.inputs[0], sl.output
        j = next((j for j in range(i + 1, len(layers)) if h in layers[j].inputs), None)
        if j is None:
            continue
        m = layers[j]
        at = m.layer.attrs
        if m.layer.kind != "mul" or at.get("broadcast") or sorted(m.inputs) != sorted([x, h]):
            continue
        xs = np.arange(-128, 128, dtype=np.int64)
        hs = sl.layer.arrays["table"][xs + 128]
        a, b = (xs, hs) if m.inputs[0] == x else (hs, xs)
        table = rounding.mul_int8(a, at["zp1"], b, at["zp2"], at["mult"], at["shift"],
                                  at["zp_out"], at["qmin"], at["qmax"],
                                  rounding.of_attrs(at)).astype(np.int8)
        lut = Layer("lut", [sl.layer.inputs[0]], m.layer.out, arrays={"table": table},
                    ops=list(sl.layer.ops) + list(m.layer.ops))
        out[j] = replace(m, layer=lut, inputs=[x])
        drop.add(i)
    return [sl for i, sl in enumerate(out) if i not in drop]


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


def _fuse_into_adds(layers: list[SegLayer], outputs: list[str],
                    fuse_one: Callable[[SegLayer, int, SegLayer], SegLayer | None]
                    ) -> list[SegLayer]:
    """For each add of two full tensors whose operand ``pos`` comes from a layer that
    nothing else reads and that is not a segment output, ``fuse_one(add, pos, producer)``
    returns the layer that takes the add's place (the producer goes), or None."""
    readers = _readers(layers)
    made_by = {sl.output: i for i, sl in enumerate(layers)}
    out: list[SegLayer | None] = list(layers)
    for j, add in enumerate(layers):
        if add.layer.kind != "add" or add.layer.attrs.get("broadcast"):
            continue
        for pos, v in enumerate(add.inputs):
            i = made_by.get(v)
            producer = out[i] if i is not None and i < j else None
            if producer is None or readers.get(v) != 1 or v in outputs:
                continue
            fused = fuse_one(add, pos, producer)
            if fused is not None:
                out[j], out[i] = fused, None
                break
    return [sl for sl in out if sl is not None]


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
                       "rounding": add.layer.attrs.get("rounding", "gemmlowp")},
                      ops=list(mul.layer.ops) + list(add.layer.ops))
        return replace(add, layer=fused, inputs=ins, origin=add.origin or add.layer)

    return _fuse_into_adds(layers, outputs, one)


def fuse_scale_conv(layers: list[SegLayer], outputs: list[str]) -> list[SegLayer]:
    """``conv(mul(x, s))`` with ``s`` a per-channel vector (squeeze-excite's scale before
    the block's 1x1 projection, PP-OCR cls), where the mul's output has no other reader
    and is not a segment output and the conv has no padding (the DMA would pad with the
    scaled tensor's zero point before the scale), becomes the conv with ``scale``: its
    program multiplies each input band by s in place (VEC MUL) before the GEMMs. The
    same integers; one launch and one activation round trip fewer."""
    readers = _readers(layers)
    made_by = {sl.output: i for i, sl in enumerate(layers)}
    out: list[SegLayer | None] = list(layers)
    for j, sl in enumerate(layers):
        conv = sl.layer.attrs.get("conv") if sl.layer.kind == "conv" else None
        if conv is None or sl.scale is not None or any(conv.pad) or len(sl.inputs) != 1:
            continue
        if conv.h * conv.w == 1 and conv.cin > 2047:  # runs as a long-K conv
            continue
        i = made_by.get(sl.inputs[0])
        if i is None or i >= j or out[i] is None:
            continue
        mul = layers[i]
        if (mul.layer.kind != "mul" or not mul.layer.attrs.get("broadcast")
                or readers.get(mul.output) != 1 or mul.output in outputs
                or not _same_rounding(mul, sl)):
            continue
        out[j] = replace(sl, inputs=list(mul.inputs), scale=mul.layer,
                         origin=sl.origin or sl.layer)
        out[i] = None
    return [sl for sl in out if sl is not None]


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
        if (c is None or conv.residual is not None or c.phases > 1
                or (c.h * c.w == 1 and c.cin > 2047)  # runs as a long-K conv
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

    return _fuse_into_adds(layers, outputs, one)
