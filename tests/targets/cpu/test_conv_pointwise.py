"""1x1 convs on narrow maps become a matmul over the flattened map: when, and exactly.

The reference is TVM's plain loops for the original conv (no edgec pipeline).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.apply import ApplyCPUSchedules
from edgec.targets.cpu.common import vector_lanes
from edgec.targets.cpu.conv_pointwise import FlattenPointwiseConv
from tvm import relax
from tvm.relax import op as R

HOST = get_target("host")
RNG = np.random.default_rng(4)


def _module(shape: tuple[int, ...], out_channels: int, **attrs: object) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    w = relax.const(RNG.standard_normal((out_channels, shape[1], 1, 1)).astype("float32"))
    b = relax.const(RNG.standard_normal((1, out_channels, 1, 1)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.add(R.nn.conv2d(x, w, **attrs), b))
            out = bb.emit_output(R.multiply(y, R.clip(R.add(y, relax.const(3.0)), 0, 6)))
        bb.emit_func_output(out)
    return bb.get()


def _fired(mod: tvm.IRModule, target: tvm.target.Target) -> int:
    rewrite = FlattenPointwiseConv()
    with target:
        rewrite(mod)
    return rewrite.fired


@pytest.mark.parametrize("shape", [(1, 24, 8, 20), (2, 7, 4, 40)])
def test_narrow_pointwise_conv_is_exact(shape: tuple[int, ...]) -> None:
    mod = _module(shape, 12)
    target = HOST.tvm_target()
    assert vector_lanes(target) >= 8  # x86 hosts: AVX2 or AVX-512
    assert _fired(mod, target) == 1
    x = RNG.standard_normal(shape).astype("float32")
    defaults = ApplyCPUSchedules()
    fast = tvm.compile(mod, target, relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    plain = tvm.compile(mod, target)
    run = [relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
           for ex in (fast, plain)]
    np.testing.assert_allclose(run[0], run[1], rtol=1e-5, atol=1e-5)
    assert defaults.fired["Matmul"] >= 1, dict(defaults.fired)


@pytest.mark.parametrize(
    ("shape", "attrs"),
    [
        ((1, 8, 8, 64), {}),  # rows of whole vectors already
        ((1, 8, 8, 20), {"strides": 2}),
        ((1, 8, 8, 20), {"padding": 1}),
        ((1, 8, 3, 3), {}),  # 9 pixels: no whole vector either way
    ],
)
def test_other_convs_are_left_alone(shape: tuple[int, ...], attrs: dict[str, object]) -> None:
    assert _fired(_module(shape, 4, **attrs), HOST.tvm_target()) == 0


def test_neon_width_rows_are_whole_vectors() -> None:
    # 20 floats are five 4-lane NEON vectors: nothing to gain on arm.
    arm = get_target("arm-cpu:cortex-a72").tvm_target()
    assert _fired(_module((1, 8, 8, 20), 4), arm) == 0
