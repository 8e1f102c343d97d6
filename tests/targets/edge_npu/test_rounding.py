"""The vector unit's binary32 rounding: against numpy's IEEE float32 arithmetic (the
formulas ONNX Runtime's MLAS kernels evaluate), through the ISA, and lowered segments
against ``int_reference`` in both rounding modes."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import int_reference, programs, rounding
from edgec.targets.edge_npu.config import load_config
from edgec.targets.edge_npu.isa import (
    Op,
    Rounding,
    VecOp,
    decode,
    encode,
    format_instr,
    make,
    parse_instr,
)
from edgec.targets.edge_npu.layers import Layer, QTensor
from edgec.targets.edge_npu.lower import SegLayer, Segment, lower
from edgec.targets.edge_npu.runtime import NpuDevice

B32, GL = Rounding.BINARY32, Rounding.GEMMLOWP


def test_requantize_is_float32_multiply_round_half_even():
    rng = np.random.default_rng(0)
    real = rng.uniform(2e-5, 0.05, 64).astype(np.float32)
    m, t = rounding.multipliers(real, B32)
    acc = rng.integers(-(1 << 17), 1 << 17, (4000, 64))
    got = rounding.requantize(acc, m, t, 3, -128, 127, B32)
    want = np.clip(np.rint(acc.astype(np.float32) * real) + 3, -128, 127)
    assert np.array_equal(got, want)
    # ties: accumulators that land exactly on .5 go to even, as the float32 conversion
    half = (np.arange(-300, 300) * 2 + 1).astype(np.int64)
    got = rounding.requantize(half, *rounding.multipliers(np.float32(0.5), B32), 0, -128, 127, B32)
    assert np.array_equal(got, np.clip(np.rint(half.astype(np.float32) * 0.5), -128, 127))


def test_mul_matches_mlas_float32_formula():
    """MLAS QLinearMul: float32((a - za) * (b - zb)) * float32(float32(sa * sb) / sc)."""
    rng = np.random.default_rng(1)
    a, b = (rng.integers(-128, 128, 100_000).astype(np.int8) for _ in range(2))
    sa, sb, sc = 0.031, 1 / 255, 0.0217
    mult, shift = rounding.mul_params(sa, sb, sc, B32)
    got = rounding.mul_int8(a, 5, b, -128, mult, shift, 0, -128, 127, B32)
    ratio = np.float32(np.float32(sa) * np.float32(sb)) / np.float32(sc)
    prod = ((a.astype(np.int64) - 5) * (b.astype(np.int64) + 128)).astype(np.float32)
    assert np.array_equal(got, np.clip(np.rint(prod * ratio), -128, 127))


def test_add_near_mlas_float32_formula():
    """MLAS QLinearAdd (SSE path): rint(zc - (r1 za + r2 zb) + r1 a + r2 b) in float32;
    the exact sum rounded once differs only where float32 rounding crosses a half."""
    rng = np.random.default_rng(2)
    a, b = (rng.integers(-128, 128, 200_000).astype(np.int8) for _ in range(2))
    s1, s2, so = 0.0213, 0.0571, 0.0634
    p = rounding.add_params(s1, s2, so, B32)
    got = rounding.add_int8(a, 4, b, -9, p, 2, -128, 127, B32).astype(np.int64)
    r1, r2 = np.float32(s1) / np.float32(so), np.float32(s2) / np.float32(so)
    fixed = np.float32(2) - (r1 * np.float32(4) + r2 * np.float32(-9))
    ort = np.clip(np.rint(fixed + a.astype(np.float32) * r1 + b.astype(np.float32) * r2),
                  -128, 127)
    d = np.abs(got - ort)
    assert d.max() <= 1 and (d == 0).mean() >= 0.9997  # measured 0.99975


def test_rnd_field_encodes_and_prints():
    ins = make(Op.VEC, vop=VecOp.REQUANT, src=0, dst=64, count=64, cols=64, param=0,
               rnd=B32)
    assert decode(encode(ins)) == ins
    text = format_instr(ins)
    assert "rnd=binary32" in text and parse_instr(text) == ins
    assert make(Op.VEC, vop=VecOp.ADD).rnd == GL  # the field's zero keeps old programs


def _conv_layer(rng, rnd):
    conv = programs.Conv(5, 7, 24, 40, 3, 3, 1, (1, 1, 1, 1), False)
    s_in, s_w, s_out = 0.05, rng.uniform(0.002, 0.01, 40), 0.11
    real = rounding.f32_ratio(np.float32(s_in) * s_w.astype(np.float32), s_out)
    mult, shift = rounding.multipliers(real, rnd)
    return Layer("conv", [QTensor((5, 7, 24), s_in, 3)], QTensor((5, 7, 40), s_out, -4),
                 {"conv": conv, "zp_out": -4, "qmin": -128, "qmax": 127,
                  "rounding": rnd.name.lower()},
                 {"weights": rng.integers(-127, 128, (40, 3, 3, 24)).astype(np.int8),
                  "bias": rng.integers(-3000, 3000, 40), "mult": mult, "shift": shift})


def _binary_layer(kind, shape, rnd):
    t1, t2, out = QTensor(shape, 0.04, 3), QTensor(shape, 0.09, -7), QTensor(shape, 0.1, 1)
    at = {"broadcast": False, "zp1": 3, "zp2": -7, "zp_out": 1, "qmin": -128, "qmax": 127,
          "rounding": rnd.name.lower()}
    if kind == "add":
        at.update(rounding.add_params(t1.scale, t2.scale, out.scale, rnd))
    else:
        at["mult"], at["shift"] = rounding.mul_params(t1.scale, t2.scale, out.scale, rnd)
    return Layer(kind, [t1, t2], out, at)


@pytest.mark.parametrize("rnd", [B32, GL])
def test_lowered_segment_bit_exact_in_both_modes(rnd):
    """conv -> add(conv, x2) -> mul(., x2): the program's VEC ops carry the layer's
    rounding and the simulator equals ``int_reference`` bit for bit."""
    rng = np.random.default_rng(5)
    conv = _conv_layer(rng, rnd)
    add, mul = _binary_layer("add", (5, 7, 40), rnd), _binary_layer("mul", (5, 7, 40), rnd)
    shapes = {"x": (1, 24, 5, 7), "z": (1, 40, 5, 7), "y": (1, 40, 5, 7),
              "s": (1, 40, 5, 7), "o": (1, 40, 5, 7)}
    tensors = {"x": conv.inputs[0], "z": add.inputs[1], "y": conv.out, "s": add.out,
               "o": mul.out}
    seg = Segment("t", ["x", "z"], ["o"],
                  [SegLayer("c", conv, ["x"], "y"), SegLayer("a", add, ["y", "z"], "s"),
                   SegLayer("m", mul, ["s", "z"], "o")], shapes, tensors)
    model = lower(load_config("edge-npu-s"), [seg])
    vec = [i for i in model.segments[0].program if i.op == Op.VEC]
    assert {i.rnd for i in vec if i.vop in (VecOp.REQUANT, VecOp.ADD, VecOp.MUL)} == {rnd}
    x = rng.integers(-128, 128, shapes["x"]).astype(np.int8)
    z = rng.integers(-128, 128, shapes["z"]).astype(np.int8)
    got = NpuDevice(model).run_segment(0, [x, z])[0]
    assert np.array_equal(got, int_reference.run_segment(seg, [x, z])[0])
