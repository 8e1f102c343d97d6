"""int8 conv kernels with the binary32 requantization epilogue get the conv schedules.

The epilogue is a let-bound TIR expression (``lower.binary32_te``); hard-swish reads the
requantized value twice, so inlining it defines its let variables twice. The default
schedules must still tile these kernels (``targets/cpu/int8.repair_ssa``) and the result
must stay bit-exact with ``requant``'s reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from edgec.passes.quantize import requant
from edgec.passes.quantize.lower import binary32_te
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.apply import ApplyCPUSchedules
from edgec.targets.cpu.int8 import repair_ssa
from tvm import relax
from tvm.relax import op as R
from tvm.s_tir.analysis import verify_well_formed

HOST = get_target("host")
ZP_X, ZP_Y, S_Y = 3, -5, 0.05


def _model(c: int, groups: int, stride: int, act: str) -> tuple[tvm.IRModule, dict]:
    """int8 conv (padding by zp_x) + bias -> binary32 -> int8 -> float ``act``."""
    rng = np.random.default_rng(groups + stride)
    k = 3
    w = rng.integers(-127, 128, (c, c // groups, k, k)).astype(np.int8)
    b = rng.integers(-2000, 2000, (c,)).astype(np.int32)
    m, t = requant.binary32_multiplier(rng.uniform(0.002, 0.02, c).astype(np.float32))
    shape = (1, c, 12, 20)
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            xp = R.nn.pad(x, [0, 0, 0, 0, 1, 1, 1, 1], "constant", float(ZP_X))
            acc = R.nn.conv2d(xp, relax.const(w), strides=[stride, stride], groups=groups,
                              out_dtype="int32")
            acc = bb.emit(R.add(acc, relax.const(b.reshape(1, c, 1, 1))))
            q = bb.call_te(binary32_te, acc, relax.const(m), relax.const(t), ZP_Y, -128, 127,
                           1, primfunc_name_hint="requantize_binary32")
            y = R.multiply(R.astype(R.subtract(R.astype(q, "int32"),
                                               relax.const(ZP_Y, "int32")), "float32"),
                           relax.const(S_Y, "float32"))
            if act == "hardswish":  # reads y twice
                y = R.divide(R.multiply(y, R.clip(R.add(y, relax.const(3.0)), 0, 6)),
                             relax.const(6.0))
            else:
                y = R.nn.relu(y)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), {"w": w, "b": b, "m": m, "t": t, "shape": shape, "stride": stride,
                      "groups": groups}


def _reference(xq: np.ndarray, p: dict, act: str) -> np.ndarray:
    s = p["stride"]
    xp = np.pad(xq, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=ZP_X)
    acc = requant.conv2d_int(xp, 0, p["w"], p["b"], (s, s), (0, 0, 0, 0), p["groups"])
    q = requant.requantize_binary32(np.moveaxis(acc, 1, -1), p["m"], p["t"], ZP_Y)
    y = (np.moveaxis(q, -1, 1).astype(np.int32) - ZP_Y).astype(np.float32) * np.float32(S_Y)
    if act == "hardswish":
        return y * np.clip(y + np.float32(3), 0, 6) / np.float32(6)
    return np.maximum(y, 0)


@pytest.mark.parametrize("groups,stride,rule", [(16, 1, "ConvDepthwise"),
                                                (16, 2, "ConvDepthwise"), (1, 1, "Conv")])
@pytest.mark.parametrize("act", ["hardswish", "relu"])
def test_binary32_conv_scheduled_and_exact(groups: int, stride: int, rule: str,
                                           act: str) -> None:
    mod, p = _model(16, groups, stride, act)
    defaults = ApplyCPUSchedules()
    ex = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    assert defaults.fired[rule] == 1, dict(defaults.fired)
    xq = np.random.default_rng(7).integers(-128, 128, p["shape"]).astype(np.int8)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xq)).numpy()
    np.testing.assert_allclose(got, _reference(xq, p, act), rtol=1e-6, atol=1e-5)  # one step is 0.05


def test_repair_ssa_makes_the_inlined_hardswish_kernel_well_formed() -> None:
    """The depthwise schedule inlines the epilogue at hard-swish's two reads: the let
    variables are defined twice (not SSA) until ``repair_ssa`` renames them."""
    from edgec.targets.cpu.conv_depthwise import ConvDepthwise
    from edgec.targets.cpu.pipeline import graph_passes
    from tvm.relax.backend.cpu_generic import pipeline as cg

    mod, _ = _model(16, 16, 1, "hardswish")
    target = HOST.tvm_target()
    with target:
        mod = tvm.transform.Sequential(graph_passes() + cg.library_dispatch_passes(target)
                                       + cg.legalize_passes(target))(mod)
    conv = next(f for gv, f in mod.functions_items()
                if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint)
    sch = ConvDepthwise().schedule(conv, target)
    assert not isinstance(sch, str), sch
    inlined = sch.mod["main"]
    assert not verify_well_formed(inlined, assert_mode=False)
    assert verify_well_formed(repair_ssa(inlined), assert_mode=False)
