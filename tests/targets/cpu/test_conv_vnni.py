"""int8 convolutions on AVX512-VNNI: channel-packed uint8 input, vpdpbusd, bit-exact.

``UnsignedInt8Matmul`` shifts a conv's int8 input to uint8, packs four channels per
pixel and compensates with a constant; ``ConvVNNI`` tensorizes the conv with
``vpdpbusd`` over sixteen output pixels. The integer result must equal the reference
exactly, and shapes the kernel cannot take must keep the generic int8 conv.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from edgec.passes.quantize import requant
from edgec.passes.quantize.lower import binary32_te
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.apply import ApplyCPUSchedules
from edgec.targets.cpu.int8_unsigned import UnsignedInt8Matmul
from edgec.targets.cpu.vnni import has_vnni
from tvm import relax
from tvm.relax import op as R
from tvm.target import Target

HOST = get_target("host")
VNNI_CPU = Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
ZP_X, ZP_Y = 3, -5


def _model(c: int, f: int, h: int, w: int, k: int, stride: int,
           seed: int = 0) -> tuple[tvm.IRModule, dict]:
    """pad(x, zp) -> int8 conv (k x k, stride) + bias -> binary32 requantization -> int8,
    as the quantize lowering emits it, with two convs reading one x."""
    rng = np.random.default_rng(seed)
    ws = [rng.integers(-128, 128, (f, c, k, k)).astype(np.int8) for _ in range(2)]
    b = rng.integers(-3000, 3000, (f,)).astype(np.int32)
    mult, shift = requant.binary32_multiplier(rng.uniform(2e-5, 2e-4, f).astype(np.float32))
    x = relax.Var("x", relax.TensorType((1, c, h, w), "int8"))
    p = k // 2
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            xp = bb.emit(R.nn.pad(x, [0, 0, 0, 0, p, p, p, p], "constant", float(ZP_X)))
            outs = []
            for weight in ws:
                acc = bb.emit(R.add(
                    R.nn.conv2d(xp, relax.const(weight), strides=[stride, stride],
                                out_dtype="int32"),
                    relax.const(b.reshape(1, f, 1, 1))))
                outs.append(bb.call_te(binary32_te, acc, relax.const(mult), relax.const(shift),
                                       ZP_Y, -128, 127, 1, primfunc_name_hint="requantize_binary32"))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    return bb.get(), {"w": ws, "b": b, "m": mult, "t": shift, "k": k, "s": stride}


def _reference(xq: np.ndarray, p: dict) -> list[np.ndarray]:
    k, s = p["k"], p["s"]
    pad = k // 2
    xp = np.pad(xq.astype(np.int64), [(0, 0), (0, 0), (pad, pad), (pad, pad)],
                constant_values=ZP_X)
    n, _, hp, wp = xp.shape
    oh, ow = (hp - k) // s + 1, (wp - k) // s + 1
    outs = []
    for w in p["w"]:
        acc = np.zeros((n, w.shape[0], oh, ow), np.int64)
        for ry in range(k):
            for rx in range(k):
                win = xp[:, :, ry:ry + s * oh:s, rx:rx + s * ow:s]
                acc += np.einsum("nchw,fc->nfhw", win, w[:, :, ry, rx].astype(np.int64))
        acc = (acc + p["b"].reshape(1, -1, 1, 1)).astype(np.int32)
        last = requant.requantize_binary32(acc.transpose(0, 2, 3, 1), p["m"], p["t"], ZP_Y)
        outs.append(last.transpose(0, 3, 1, 2))
    return outs


def _build_run(mod: tvm.IRModule, xq: np.ndarray) -> tuple[list[np.ndarray], ApplyCPUSchedules]:
    defaults = ApplyCPUSchedules()
    ex = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return [o.numpy() for o in vm["main"](tvm.runtime.tensor(xq))], defaults


@pytest.mark.parametrize("c,f,h,w,k", [
    (24, 16, 10, 32, 3),     # 3x3, as PP-OCR det's 96 -> 24 convs
    (16, 24, 6, 16, 1),      # pointwise
    (16, 24, 4, 20, 1),      # pointwise on a 20-wide map: runs over the flattened 4*20 map
])
def test_vnni_conv_is_bit_exact(c: int, f: int, h: int, w: int, k: int) -> None:
    if not has_vnni(HOST.tvm_target()):
        pytest.skip("this machine's CPU has no AVX512-VNNI: the kernel cannot run here")
    mod, p = _model(c, f, h, w, k, 1)
    # Extremes included: -128 becomes 0 and 127 becomes 255 after the shift.
    xq = np.random.default_rng(1).integers(-128, 128, (1, c, h, w)).astype(np.int8)
    xq[0, 0] = -128
    xq[0, -1] = 127
    got, defaults = _build_run(mod, xq)
    # Both convs call one kernel: the weights are its parameters.
    assert defaults.fired["ConvVNNI"] == 1, dict(defaults.fired)
    for g, r in zip(got, _reference(xq, p)):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("c,w,stride", [
    (8, 32, 2),    # horizontal stride 2: sixteen pixels are not one load
    (8, 20, 1),    # output width 20: no multiple of 16
    (6, 16, 1),    # 6 channels: no whole groups of four
])
def test_shapes_the_kernel_cannot_take_keep_the_generic_conv(c: int, w: int, stride: int) -> None:
    mod, p = _model(c, 16, 5, w, 3, stride)
    xq = np.random.default_rng(2).integers(-128, 128, (1, c, 5, w)).astype(np.int8)
    got, defaults = _build_run(mod, xq)
    assert defaults.fired["ConvVNNI"] == 0 and defaults.fired["Conv"] >= 1, dict(defaults.fired)
    for g, r in zip(got, _reference(xq, p)):
        np.testing.assert_array_equal(g, r)


def test_pad_and_packing_run_inside_the_conv_kernel() -> None:
    """No pad or packing pass of its own: each conv reads the int8 input and packs the
    rows of its tile (PP-OCR cls in int8 went from 84 kernels to 68)."""
    mod, _ = _model(16, 16, 4, 16, 3, 1)
    rewrite = UnsignedInt8Matmul()
    with VNNI_CPU:
        text = rewrite(mod).script()
    assert rewrite.fired == 2
    assert "R.nn.pad" not in text and "R.permute_dims" not in text, text
    # both convs read the int8 input x itself
    assert re.findall(r"R\.call_tir\(cls\.(\w+), \(x,", text) == ["conv2d_u8s8"] * 2, text


def test_epilogue_reading_a_second_input_keeps_vnni() -> None:
    """A residual read by the epilogue (PP-OCR cls's ``conv + dequantize(r)``) fuses in as
    a producer block the reduction never reads: it is inlined, the conv still tensorized."""
    if not has_vnni(HOST.tvm_target()):
        pytest.skip("this machine's CPU has no AVX512-VNNI: the kernel cannot run here")
    c, f, h, w = 16, 16, 2, 32
    rng = np.random.default_rng(5)
    weight = rng.integers(-128, 128, (f, c, 1, 1)).astype(np.int8)
    mult, shift = requant.binary32_multiplier(rng.uniform(2e-5, 2e-4, f).astype(np.float32))
    x = relax.Var("x", relax.TensorType((1, c, h, w), "int8"))
    r = relax.Var("r", relax.TensorType((1, f, h, w), "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, r]):
        with bb.dataflow():
            # bound before the conv, as the model's residual is: FuseTIR keeps the order
            res = bb.emit(R.multiply(R.astype(r, "int32"), relax.const(300, "int32")))
            acc = bb.emit(R.nn.conv2d(x, relax.const(weight), out_dtype="int32"))
            acc = bb.emit(R.add(acc, res))
            out = bb.emit_output(bb.call_te(binary32_te, acc, relax.const(mult),
                                            relax.const(shift), ZP_Y, -128, 127, 1,
                                            primfunc_name_hint="requantize_binary32"))
        bb.emit_func_output(out)
    xq = rng.integers(-128, 128, (1, c, h, w)).astype(np.int8)
    rq = rng.integers(-128, 128, (1, f, h, w)).astype(np.int8)
    defaults = ApplyCPUSchedules()
    ex = tvm.compile(bb.get(), HOST.tvm_target(),
                     relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](
        tvm.runtime.tensor(xq), tvm.runtime.tensor(rq)).numpy()
    assert defaults.fired["ConvVNNI"] == 1, dict(defaults.fired)
    acc = np.einsum("nchw,fc->nfhw", xq.astype(np.int64), weight[:, :, 0, 0].astype(np.int64))
    acc = (acc + 300 * rq.astype(np.int64)).astype(np.int32)
    want = requant.requantize_binary32(acc.transpose(0, 2, 3, 1), mult, shift, ZP_Y)
    np.testing.assert_array_equal(got, want.transpose(0, 3, 1, 2))
