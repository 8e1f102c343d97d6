"""FoldPadIntoConv: an explicit constant pad in front of a conv2d runs inside the conv.

The int8 lowering pads with the input's zero point; folded, the conv kernel pads
with that value itself. The results must not change (bit-exact in int8), the pad
kernel must be gone, and pads the conv cannot take (reflect, on the channel axis)
must stay.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.pad_into_conv import FoldPadIntoConv
from tvm import relax
from tvm.relax import op as R

HOST = get_target("host")
ZP = -7


def _model(x_ty: relax.TensorType, w: np.ndarray, pad: list[int], mode: str, value: float,
           groups: int, stride: int, out_dtype: str) -> tvm.IRModule:
    x = relax.Var("x", x_ty)
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            xp = bb.emit(R.nn.pad(x, pad, mode, value))
            out = bb.emit_output(R.nn.conv2d(xp, relax.const(w), strides=[stride, stride],
                                             groups=groups, out_dtype=out_dtype))
        bb.emit_func_output(out)
    return bb.get()


def _reference(x: np.ndarray, w: np.ndarray, pad: list[int], value: float, groups: int,
               stride: int) -> np.ndarray:
    top, bottom, left, right = pad[4:]
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (top, bottom), (left, right)],
                constant_values=value)
    f, cg, kh, kw = w.shape
    oh = (xp.shape[2] - kh) // stride + 1
    ow = (xp.shape[3] - kw) // stride + 1
    out = np.zeros((1, f, oh, ow))
    per = f // groups
    for o in range(f):
        chans = xp[0, o // per * cg:(o // per + 1) * cg]
        for ry in range(kh):
            for rx in range(kw):
                win = chans[:, ry:ry + stride * oh:stride, rx:rx + stride * ow:stride]
                out[0, o] += np.einsum("chw,c->hw", win, w[o, :, ry, rx].astype(np.float64))
    return out


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST))
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("c,groups,k,stride,pad", [
    (24, 24, 3, 1, [0, 0, 0, 0, 1, 1, 1, 1]),   # depthwise 3x3, as PP-OCR cls
    (16, 16, 5, 2, [0, 0, 0, 0, 2, 2, 2, 2]),   # depthwise 5x5, stride 2
    (8, 1, 3, 1, [0, 0, 0, 0, 1, 2, 0, 1]),     # regular conv, uneven pad
])
def test_int8_conv_pads_with_the_zero_point_in_its_kernel(
        c: int, groups: int, k: int, stride: int, pad: list[int]) -> None:
    rng = np.random.default_rng(0)
    f = c if groups > 1 else 12
    w = rng.integers(-128, 128, (f, c // groups, k, k)).astype(np.int8)
    x = rng.integers(-128, 128, (1, c, 10, 21)).astype(np.int8)
    mod = _model(relax.TensorType(x.shape, "int8"), w, pad, "constant", float(ZP), groups,
                 stride, "int32")
    fold = FoldPadIntoConv()
    folded = fold(mod)
    assert fold.fired == 1
    assert "R.nn.pad" not in folded.script()  # the pad had no other reader: gone
    got = _run(mod, x)
    np.testing.assert_array_equal(got, _reference(x, w, pad, ZP, groups, stride).astype(np.int32))


def test_float_conv_after_a_nonzero_pad() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 4, 7, 19)).astype(np.float32)
    pad = [0, 0, 0, 0, 1, 1, 2, 2]
    mod = _model(relax.TensorType(x.shape, "float32"), w, pad, "constant", 1.5, 1, 1, "")
    got = _run(mod, x)
    np.testing.assert_allclose(got, _reference(x, w, pad, 1.5, 1, 1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("pad,mode", [
    ([0, 0, 0, 0, 1, 1, 1, 1], "reflect"),     # not a constant
    ([0, 0, 1, 1, 1, 1, 1, 1], "constant"),    # pads channels: not the conv's padding
])
def test_pads_the_conv_cannot_take_stay(pad: list[int], mode: str) -> None:
    c = 4 + pad[2] + pad[3]
    w = np.ones((3, c, 3, 3), np.float32)
    mod = _model(relax.TensorType((1, 4, 6, 6), "float32"), w, pad, mode, 0.0, 1, 1, "")
    fold = FoldPadIntoConv()
    assert "R.nn.pad" in fold(mod).script()
    assert fold.fired == 0
