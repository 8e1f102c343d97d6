"""Layer fusion before lowering: which patterns fuse, and fused programs equal the
unfused integer reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import int_reference, rounding
from edgec.targets.edge_npu.fusion import fuse, fuse_mul_add
from edgec.targets.edge_npu.isa import Op
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
