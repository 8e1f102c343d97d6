"""quantize-int8 lowering: integer kernels bit-exact against a numpy integer reference.

Inputs are drawn on the int8 grid of the input's parameters, so quantizing them is
exact and any difference would come from the integer kernel itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from edgec import frontend
from edgec.passes.quantize import requant
from edgec.passes.quantize import scheme as sc
from edgec.passes.quantize.lower import quantize_int8
from edgec.passes.registry import PassContext
from edgec.targets.edge_npu.intmath import quantize_multiplier
from tvm import relax

from tests.passes.quantize._models import conv_model, matmul_model, quantized

HOST = tvm.target.Target({"kind": "llvm"})


def _lower(q, rounding: str):
    ctx = PassContext(target=None, options={"requant_rounding": rounding})
    mod = quantize_int8(frontend.to_relax(q), ctx)
    return mod, ctx.report["quantize-int8"]


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, target=HOST), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _reference(acc: np.ndarray, s_x: float, s_w: np.ndarray, p_y: sc.ActParams, lo: int,
               hi: int, axis: int, rounding: str) -> np.ndarray:
    if rounding == "binary32":
        mult, shift = requant.binary32_multiplier(
            (np.float32(s_x) * s_w).astype(np.float32) / np.float32(p_y.scale))
    else:
        real = (np.float32(s_x) * s_w).astype(np.float64) / np.float64(np.float32(p_y.scale))
        mult, shift = (np.array(v, np.int64) for v in zip(*[quantize_multiplier(r) for r in real]))
    moved = np.moveaxis(acc, axis, -1)  # per-channel parameters run along the last axis
    out = requant.requantize(moved, mult, shift, p_y.zero_point, lo, hi, rounding)
    return np.moveaxis(out, -1, axis)


def _grid_input(p: sc.ActParams, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    xq = np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)
    return xq, sc.dequantize(xq, p.scale, p.zero_point)


@pytest.mark.parametrize("rounding", ["binary32", "single", "gemmlowp"])
@pytest.mark.parametrize("groups,stride,act", [(1, 1, "relu"), (8, 2, "relu"), (1, 2, None),
                                               (1, 1, "clip")])
def test_conv_bit_exact(groups: int, stride: int, act: str | None, rounding: str) -> None:
    prepared, anchors, params, q = quantized(conv_model(groups, stride, act))
    mod, report = _lower(q, rounding)
    a = anchors[0]
    if act == "clip":
        # TVM imports ONNX Clip as call_tir(maximum/minimum), not R.clip: the layer
        # stays float between dequantize/quantize, and the report says so
        assert report["lowered"] == {}
        return
    assert report["lowered"] == {"conv2d": 1}
    p_x, p_y = params[a.x], params[a.y]
    xq, x = _grid_input(p_x, (1, 8, 10, 12))
    got = sc.quantize(_run(mod, x), p_y.scale, p_y.zero_point)
    w = frontend_const(prepared, a.weight)
    w_q, s_w = sc.quantize_weight(w, 0)
    b_q = sc.quantize_bias(frontend_const(prepared, a.bias), p_x.scale, s_w)
    acc = requant.conv2d_int(xq, p_x.zero_point, w_q, b_q, (stride, stride), (1, 1, 1, 1),
                             groups)
    lo = max(-128, p_y.zero_point) if act == "relu" else -128
    want = _reference(acc, p_x.scale, s_w, p_y, lo, 127, 1, rounding)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rounding", ["binary32", "single", "gemmlowp"])
def test_matmul_bit_exact(rounding: str) -> None:
    prepared, anchors, params, q = quantized(matmul_model())
    mod, report = _lower(q, rounding)
    assert report["lowered"] == {"matmul": 1}
    text = mod["main"].script(show_meta=False)
    assert 'out_dtype="int32"' in text and "R.dequantize(lv" not in text.split("R.matmul")[0]
    a = anchors[0]
    p_x, p_y = params[a.x], params[a.y]
    xq, x = _grid_input(p_x, (2, 5, 24))
    got = sc.quantize(_run(mod, x), p_y.scale, p_y.zero_point)
    w_q, s_w = sc.quantize_weight(frontend_const(prepared, a.weight), 1)
    b_q = sc.quantize_bias(frontend_const(prepared, a.bias), p_x.scale, s_w)
    acc = requant.matmul_int(xq, p_x.zero_point, w_q, b_q)
    want = _reference(acc, p_x.scale, s_w, p_y, max(-128, p_y.zero_point), 127, -1, rounding)
    np.testing.assert_array_equal(got, want)


def test_requant_single_matches_exact_rounding() -> None:
    """``single`` is acc * M rounded once (half up), with M = mult * 2**(shift - 31)."""
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**20), 2**20, 10_000)
    acc[:4] = [0, 1, -1, 2**19]
    for real in (0.0003, 0.017, 0.6, 0.99):
        mult, shift = quantize_multiplier(real)
        got = requant.requantize_single(acc, mult, shift, 0, -128, 127)
        exact = np.floor(acc * (mult * 2.0 ** (shift - 31)) + 0.5)
        np.testing.assert_array_equal(got.astype(np.int64), np.clip(exact, -128, 127))


def test_requant_binary32_matches_float32_arithmetic() -> None:
    """``binary32`` is ``round_half_even(float32(acc) * float32(M))`` (ONNX Runtime's MLAS
    requantization), computed with integers only; numpy's IEEE float32 is the oracle.

    Half of the accumulators are picked next to ties (``acc * M`` near ``k + 1/2``), where
    the float32 product and the exact product round differently: the check below also
    asserts such cases occur, so the test can tell the two apart."""
    rng = np.random.default_rng(0)
    float_vs_exact = 0
    for real in 10 ** rng.uniform(-5, 0.5, 60):
        M = np.float32(real)
        m, t = requant.binary32_multiplier(M)
        assert m * 2.0 ** -float(t) == float(M) and m < 2**24
        near = np.round((rng.integers(-300, 300, 4000) + 0.5) / np.float64(M)).astype(np.int64)
        acc = np.concatenate([rng.integers(-(2**24) + 1, 2**24, 4000), near - 1, near,
                              near + 1, [0, 1, -1]])
        acc = np.clip(acc, -(2**24) + 1, 2**24 - 1)
        want = np.rint(acc.astype(np.float32) * M).astype(np.float64)
        got = requant.binary32_round(acc, m, t)
        ok = np.abs(want) < 2**requant.SATURATE_BITS
        np.testing.assert_array_equal(got[ok], want[ok])
        # beyond 2**10 the result saturates int8 anyway: same sign, still beyond
        assert np.all(np.sign(got[~ok]) == np.sign(want[~ok]))
        assert np.all(np.abs(got[~ok]) >= 2**requant.SATURATE_BITS)
        float_vs_exact += int((want != np.rint(acc * np.float64(M))).sum())
    assert float_vs_exact > 100


def test_binary32_negligible_multiplier_is_zero_like_float32() -> None:
    # A dead output channel (PP-OCRv4 det has one) gives M ~ 7.7e-37: too small for a
    # shift, and any int32 accumulator times it rounds to 0 in float32 too.
    real = np.array([7.7e-37, 2.0**-33, 2.0**-31, 0.0], np.float32)
    m, t = requant.binary32_multiplier(real)
    assert list(m[[0, 1, 3]]) == [0, 0, 0] and m[2] > 0
    acc = np.array([2**31 - 1, -(2**31), 12345, -1], np.int64)
    for i in range(4):
        want = np.rint(acc.astype(np.float32) * real[i]).astype(np.float64)
        got = requant.binary32_round(acc, m[i], t[i])
        ok = np.abs(want) < 2**requant.SATURATE_BITS
        np.testing.assert_array_equal(got[ok], want[ok])


def test_binary32_relax_kernel_matches_reference() -> None:
    """The TE kernel of ``binary32`` (as compiled) equals ``requant.binary32_round`` on
    near-tie accumulators and on saturating ones, for multipliers above and below
    2**-25 scale."""
    from edgec.passes.quantize.lower import binary32_te

    rng = np.random.default_rng(3)
    for real in (2.0**-26 * 1.37, 0.00071, 0.0123, 0.31, 1.7):
        m, t = requant.binary32_multiplier(np.array([real], np.float32))
        near = np.round((rng.integers(-300, 300, 3000) + 0.5) / real).astype(np.int64)
        acc = np.clip(np.concatenate([near - 1, near, near + 1,
                                      rng.integers(-(2**24), 2**24, 3000)]),
                      -(2**24) + 1, 2**24 - 1)
        # and the saturated range (the clamp at 2**SATURATE_BITS steps)
        acc = np.concatenate([acc, rng.integers(-(2**31), 2**31 - 1, 3000)])
        acc = acc.astype(np.int32).reshape(-1, 1)
        x = relax.Var("acc", relax.TensorType(acc.shape, "int32"))
        bb = relax.BlockBuilder()
        with bb.function("main", [x]):
            bb.emit_func_output(bb.emit_te(binary32_te, x, relax.const(m), relax.const(t),
                                           3, -128, 127, 1))
        got = _run(bb.get(), acc)
        want = requant.requantize_binary32(acc, m, t, 3, -128, 127)
        np.testing.assert_array_equal(got, want)


def test_binary32_float_kernel_matches_reference_below_2_24() -> None:
    """Below 2**24, the float32 form of ``binary32`` gives the integers of
    ``requant.binary32_round``: ties (half to even), near-ties, clamps, a zero multiplier."""
    from edgec.passes.quantize.lower import binary32_float_te

    rng = np.random.default_rng(4)
    reals = np.array([2.0**-26 * 1.37, 0.00071, 0.0123, 0.31, 1.7, 0.25, 0.0], np.float32)
    m, t = requant.binary32_multiplier(reals)
    exact = (m.astype(np.float64) * np.exp2(-t.astype(np.float64))).astype(np.float32)
    cols = []
    for real in reals:
        near = np.round((rng.integers(-300, 300, 2000) + 0.5) / max(real, 1e-9)).astype(np.int64)
        cols.append(np.concatenate([near - 1, near, near + 1, rng.integers(-(2**24) + 1, 2**24, 2000)]))
    acc = np.clip(np.stack(cols, axis=1), -(2**24) + 1, 2**24 - 1).astype(np.int32)
    # exact ties of the float32 product (acc = 2 mod 4 for the multiplier 1/4)
    assert np.sum(np.abs(np.modf(acc[:, 5] * 0.25)[0]) == 0.5) > 100
    x = relax.Var("acc", relax.TensorType(acc.shape, "int32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit_te(binary32_float_te, x, relax.const(exact), -3, -100, 127, 1))
    got = _run(bb.get(), acc)
    want = requant.requantize_binary32(acc, m, t, -3, -100, 127)
    np.testing.assert_array_equal(got, want)


def test_float_readers_keep_layer_float() -> None:
    """A layer whose float output is also a graph output is not lowered."""
    _, _, _, q = quantized(conv_model())
    q.graph.output[0].name = "y"
    _, report = _lower(q, "single")
    assert report["lowered"] == {}


def frontend_const(model, name):
    from edgec.passes.quantize.onnx_graph import Graph

    return Graph(model).const(name)
