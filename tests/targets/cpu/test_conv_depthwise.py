"""The depthwise-conv schedule is numerically exact against TVM's plain loops.

Shapes exercise odd widths (predicated last vector of the padded band), strides 1-3
(deinterleaved band), fused epilogues, no padding, channel multipliers and 1-d.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.apply import ApplyCPUSchedules
from tvm import relax
from tvm.relax import op as R

HOST = get_target("host")
RNG = np.random.default_rng(2)


def _module(shape: tuple[int, ...], body: Callable[[relax.Expr], relax.Expr]) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(x))
        bb.emit_func_output(out)
    return bb.get()


def _run(ex: tvm.runtime.Executable, x: np.ndarray) -> np.ndarray:
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _w(*shape: int) -> relax.Constant:
    return relax.const(RNG.standard_normal(shape).astype("float32"))


def check(shape: tuple[int, ...], body: Callable[[relax.Expr], relax.Expr]) -> None:
    """Scheduled vs plain loops, and the depthwise rule scheduled the conv."""
    mod = _module(shape, body)
    x = RNG.standard_normal(shape).astype("float32")
    defaults = ApplyCPUSchedules()
    fast = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    plain = tvm.compile(mod, HOST.tvm_target())
    np.testing.assert_allclose(_run(fast, x), _run(plain, x), rtol=1e-5, atol=1e-5)
    assert defaults.fired["ConvDepthwise"] == 1, dict(defaults.fired)


def _hardswish(y: relax.Expr) -> relax.Expr:
    six = relax.const(6.0)
    clip = R.minimum(R.maximum(R.add(y, relax.const(3.0)), relax.const(0.0)), six)
    return R.divide(R.multiply(y, clip), six)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_depthwise3x3_bias_hardswish(stride: int) -> None:
    check(
        (1, 6, 17, 37),
        lambda x: _hardswish(
            R.add(R.nn.conv2d(x, _w(6, 1, 3, 3), strides=stride, padding=1, groups=6), _w(1, 6, 1, 1))
        ),
    )


def test_depthwise5x5_wide_rows() -> None:
    check((1, 4, 12, 80), lambda x: R.nn.conv2d(x, _w(4, 1, 5, 5), padding=2, groups=4))


def test_depthwise_stride2_unpadded() -> None:
    check((1, 3, 9, 21), lambda x: R.nn.relu(R.nn.conv2d(x, _w(3, 1, 3, 3), strides=2, groups=3)))


def test_depthwise_channel_multiplier() -> None:
    check((1, 3, 8, 16), lambda x: R.nn.conv2d(x, _w(6, 1, 3, 3), padding=1, groups=3))


def test_depthwise_narrow_and_batched() -> None:
    check((2, 5, 7, 3), lambda x: R.nn.conv2d(x, _w(5, 1, 3, 3), padding=1, groups=5))


def test_depthwise_conv1d() -> None:
    check((1, 8, 45), lambda x: R.nn.conv1d(x, _w(8, 1, 5), strides=2, padding=2, groups=8))


def test_regular_conv_is_not_depthwise() -> None:
    mod = _module((1, 4, 8, 16), lambda x: R.nn.conv2d(x, _w(8, 4, 3, 3), padding=1))
    defaults = ApplyCPUSchedules()
    tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    assert defaults.fired["ConvDepthwise"] == 0 and defaults.fired["Conv"] == 1


def test_arm_depthwise_cross_compiles_with_neon_width() -> None:
    arm = get_target("arm-cpu:cortex-a72")
    mod = _module((1, 8, 20, 40), lambda x: R.nn.conv2d(x, _w(8, 1, 3, 3), strides=2, padding=1, groups=8))
    defaults = ApplyCPUSchedules()
    tvm.compile(mod, arm.tvm_target(), relax_pipeline=cpu_pipeline(arm, defaults=defaults))
    assert defaults.fired["ConvDepthwise"] == 1
