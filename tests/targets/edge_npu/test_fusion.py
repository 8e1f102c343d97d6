"""Layer fusion before lowering: which patterns fuse, and fused programs equal the
unfused integer reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import int_reference, rounding
from edgec.targets.edge_npu.fusion import fuse, fuse_mul_add
from edgec.targets.edge_npu.isa import Op, VecOp
from edgec.targets.edge_npu.layers import Layer, QTensor
from edgec.targets.edge_npu.lower import SegLayer, Segment, lower
from edgec.targets.edge_npu.runtime import NpuDevice
from edgec.targets.edge_npu.simulator import simulate

from .tuner_fixture import _conv_layer

B32 = rounding.Rounding.BINARY32


def _binary(kind, a, b, out, broadcast=False):
    at = {"broadcast": broadcast, "zp1": a.zp, "zp2": b.zp, "zp_out": out.zp, "qmin": -128,
          "qmax": 127, "rounding": "binary32"}
    if kind == "add":
        at.update(rounding.add_params(a.scale, b.scale, out.scale, B32))
    else:
        at["mult"], at["shift"] = rounding.mul_params(a.scale, b.scale, out.scale, B32)
    return Layer(kind, [a, b], out, at, ops=[f"relax.{'add' if kind == 'add' else 'multiply'}"])


def _se_residual(h, w, c, mul_first=True, other=False, mul_is_output=False):
    """conv -> x; add(x or y, mul(x, s)) with s a per-channel segment input (the SE
    scale). ``other``: the add's other operand is a second conv's output y, not x."""
    rng = np.random.default_rng(h * w + c)
    conv = _conv_layer(rng, h, w, 8, c, 1)
    x = conv.out
    s = QTensor((1, 1, c), 1 / 255, -128)
    m = QTensor(x.shape, 0.03, 4)
    y = x
    layers = [SegLayer("c", conv, ["in"], "x")]
    tensors = {"in": conv.inputs[0], "x": x, "s": s, "m": m}
    if other:
        conv2 = _conv_layer(rng, h, w, 8, c, 1)
        y = replace_scale(conv2.out, 0.05, 2)
        conv2.out = y
        layers.append(SegLayer("c2", conv2, ["in"], "y"))
        tensors["y"] = y
    out = QTensor(x.shape, 0.06, -3)
    mul = _binary("mul", x, s, m, broadcast=True)
    yname = "y" if other else "x"
    add = _binary("add", *((m, y) if mul_first else (y, m)), out)
    layers += [SegLayer("mul", mul, ["x", "s"], "m"),
               SegLayer("add", add, ["m", yname] if mul_first else [yname, "m"], "o")]
    tensors["o"] = out
    outs = ["o", "m"] if mul_is_output else ["o"]
    shapes = {"in": (1, 8, h, w), "s": (1, c, 1, 1), "o": (1, c, h, w), "m": (1, c, h, w)}
    return Segment("t", ["in", "s"], outs, layers, shapes, tensors)


def replace_scale(t, scale, zp):
    return QTensor(t.shape, scale, zp)


def _check(cfg, seg, seed=0):
    model = lower(cfg, [seg])
    rng = np.random.default_rng(seed)
    ins = [rng.integers(-128, 128, seg.shapes[v]).astype(np.int8) for v in seg.inputs]
    got = NpuDevice(model, cfg).run_segment(0, ins)
    for g, r in zip(got, int_reference.run_segment(seg, ins)):
        assert np.array_equal(g, r)
    return model


@pytest.mark.parametrize("mul_first", [True, False])
@pytest.mark.parametrize("other", [False, True])
def test_se_residual_fuses_bit_exact(small, mul_first, other):
    """``x + x * s`` (det's RSE block) and ``y + x * s``, either operand order: one
    ``muladd`` layer, equal to the unfused integer reference."""
    seg = _se_residual(6, 10, 24, mul_first, other)
    model = _check(small, seg)
    kinds = [ly["kind"] for ly in model.segments[0].layers]
    assert kinds == ["conv"] + (["conv"] if other else []) + ["muladd"]


def test_many_chunks_bit_exact(small):
    """A tensor larger than a bank streams in several chunks, double buffered."""
    seg = _se_residual(48, 48, 32)
    model = _check(small, seg, seed=3)
    assert model.segments[0].layers[-1]["kind"] == "muladd"
    prog = model.segments[0].program
    last = max(i for i, ins in enumerate(prog) if ins.op == Op.SYNC)
    assert sum(ins.op == Op.STORE for ins in prog[last:]) >= 3


def test_mul_read_elsewhere_does_not_fuse():
    """A mul whose output is a segment output (so read outside the add) stays a layer."""
    seg = _se_residual(6, 10, 24, mul_is_output=True)
    assert [sl.layer.kind for sl in fuse_mul_add(seg.layers, seg.outputs)] == \
        ["conv", "mul", "add"]


def test_full_size_mul_does_not_fuse():
    """Only a per-channel (broadcast) scale fuses: ``x * z`` with z a full tensor is left
    to the other passes."""
    seg = _se_residual(6, 10, 24)
    mul = seg.layers[1].layer
    full = Layer("mul", [mul.inputs[0], mul.inputs[0]], mul.out,
                 {**mul.attrs, "broadcast": False}, ops=mul.ops)
    layers = [seg.layers[0], SegLayer("mul", full, ["x", "x"], "m"), seg.layers[2]]
    assert [sl.layer.kind for sl in fuse(layers, seg.outputs)] == ["conv", "mul", "add"]


def test_fused_layer_takes_fewer_cycles(npu):
    """One load of x, one store, one launch: fewer simulated cycles than mul then add."""
    seg = _se_residual(40, 40, 96)
    fused = lower(npu, [seg])
    plain = lower(npu, [_se_residual(40, 40, 96)], fuse=False)

    def cycles(m):
        return simulate(npu, m.segments[0].program).cycles

    assert [ly["kind"] for ly in plain.segments[0].layers] == ["conv", "mul", "add"]
    assert cycles(fused) < cycles(plain)


def _se_scale_conv(h, w, cin, cout, k=1, mul_is_output=False):
    """mul(x, s) -> conv k x k (padding k // 2): squeeze-excite's scale before the block's
    projection (PP-OCR cls)."""
    rng = np.random.default_rng(h * w + cin + k)
    conv = _conv_layer(rng, h, w, cin, cout, k, s_in=0.03, zp_in=4)
    conv.attrs["rounding"] = "binary32"
    xt = QTensor((h, w, cin), 0.05, -7)
    s = QTensor((1, 1, cin), 1 / 255, -128)
    mul = _binary("mul", xt, s, conv.inputs[0], broadcast=True)
    layers = [SegLayer("mul", mul, ["x", "s"], "m"), SegLayer("c", conv, ["m"], "o")]
    tensors = {"x": xt, "s": s, "m": conv.inputs[0], "o": conv.out}
    shapes = {"x": (1, cin, h, w), "s": (1, cin, 1, 1), "m": (1, cin, h, w),
              "o": (1, cout, h, w)}
    return Segment("t", ["x", "s"], ["o", "m"] if mul_is_output else ["o"], layers, shapes,
                   tensors)


@pytest.mark.parametrize("shape", [(6, 10, 24, 40), (30, 40, 32, 24), (12, 12, 48, 96)],
                         ids=["one_band", "bands", "n_tiles"])
def test_se_scale_fuses_into_the_conv_bit_exact(small, shape):
    """The conv scales each input band in place before its GEMMs: one layer, equal to
    the unfused integer reference (one band; several bands through both banks; several
    N-tiles)."""
    seg = _se_scale_conv(*shape)
    model = _check(small, seg, seed=1)
    (ly,) = model.segments[0].layers
    assert ly["kind"] == "conv" and ly["fused_scale"]
    assert ly["ops"][0] == "relax.multiply"
    muls = [i for i in model.segments[0].program if i.op == Op.VEC and i.vop == VecOp.MUL]
    assert len(muls) >= (3 if shape[0] == 30 else 1)  # one per band


@pytest.mark.parametrize("mapping", [{"order": "tile"}, {"dataflow": "os", "band_rows": 3}])
def test_se_scale_with_other_mappings_bit_exact(small, mapping):
    """Tile order reloads (and rescales) each band per N-tile; OS and short bands."""
    from edgec.targets.edge_npu import mapping as mp

    seg = _se_scale_conv(30, 40, 32, 96)
    # the key of the fused conv at its places: lower once, then map it
    key = lower(small, [_se_scale_conv(30, 40, 32, 96)]).segments[0].layers[0]["workload"]
    model = lower(small, [seg], mappings={key: mp.Mapping(**mapping)})
    prog = model.segments[0].program
    muls = sum(i.op == Op.VEC and i.vop == VecOp.MUL for i in prog)
    stores = sum(i.op == Op.STORE for i in prog)
    if "order" in mapping:  # one band load, and one scaling, per (band, N-tile)
        assert muls == stores and muls > 6
    else:
        assert model.segments[0].layers[0]["dataflow"] == "os"
        assert muls == -(-30 // 3)  # one per band of 3 rows
    rng = np.random.default_rng(2)
    ins = [rng.integers(-128, 128, seg.shapes[v]).astype(np.int8) for v in seg.inputs]
    got = NpuDevice(model, small).run_segment(0, ins)[0]
    assert np.array_equal(got, int_reference.run_segment(seg, ins)[0])


def test_padded_conv_or_shared_mul_does_not_take_the_scale():
    """A 3x3 conv with padding would pad with the scaled input's zero point before the
    scale; a mul read elsewhere must still be stored."""
    padded = _se_scale_conv(6, 10, 24, 40, k=3)
    assert [sl.layer.kind for sl in fuse(padded.layers, padded.outputs)] == ["mul", "conv"]
    shared = _se_scale_conv(6, 10, 24, 40, mul_is_output=True)
    assert [sl.layer.kind for sl in fuse(shared.layers, shared.outputs)] == ["mul", "conv"]


def test_scaled_conv_takes_fewer_cycles(npu):
    """cls's SE projection (3 x 96 x 88 -> 16): the fused conv beats mul then conv."""
    seg = _se_scale_conv(3, 96, 88, 16)
    fused = lower(npu, [seg])
    plain = lower(npu, [_se_scale_conv(3, 96, 88, 16)], fuse=False)
    assert len(plain.segments[0].layers) == 2 and len(fused.segments[0].layers) == 1
    assert (simulate(npu, fused.segments[0].program).cycles <
            simulate(npu, plain.segments[0].program).cycles)
