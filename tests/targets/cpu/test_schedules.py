"""Each default CPU schedule is numerically exact against TVM's plain loops.

One small Relax model per kernel class, with shapes that exercise uneven tiles
(extents that are not multiples of the vector width) and fused epilogues. Each
test also asserts the intended rule scheduled the kernel, so a rule that silently
stops firing fails here rather than only showing up as a slowdown in bench/.
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
RNG = np.random.default_rng(0)


def _module(shapes: list[tuple[int, ...]], body: Callable[..., relax.Expr]) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(*params))
        bb.emit_func_output(out)
    return bb.get()


def _run(ex: tvm.runtime.Executable, args: list[np.ndarray]) -> np.ndarray:
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def check(
    shapes: list[tuple[int, ...]], body: Callable[..., relax.Expr], rule: str
) -> ApplyCPUSchedules:
    """Build scheduled and plain, compare outputs, and check ``rule`` fired."""
    mod = _module(shapes, body)
    args = [RNG.standard_normal(s).astype("float32") for s in shapes]
    defaults = ApplyCPUSchedules()
    fast = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    plain = tvm.compile(mod, HOST.tvm_target())  # TVM's cpu_generic: unscheduled loops
    got, want = _run(fast, args), _run(plain, args)
    # Same summation order per output; only FMA contraction may differ.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert defaults.fired[rule] >= 1, dict(defaults.fired)
    return defaults


def _w(*shape: int) -> relax.Constant:
    return relax.const(RNG.standard_normal(shape).astype("float32"))


def test_dense_bias_gelu() -> None:
    check([(37, 72)], lambda x: R.nn.gelu(R.add(R.matmul(x, _w(72, 50)), _w(50))), "Matmul")


def test_batch_matmul_uneven() -> None:
    check([(3, 17, 24), (3, 24, 13)], lambda a, b: R.matmul(a, b), "Matmul")


def test_matvec() -> None:
    check([(1, 200)], lambda x: R.matmul(x, _w(200, 2)), "Matmul")


def test_dense_transposed_weight() -> None:
    # x @ W.T with a constant W: the transpose folds into the constant.
    check([(8, 40)], lambda x: R.matmul(x, R.permute_dims(_w(24, 40))), "Matmul")


@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_padded(stride: int) -> None:
    check(
        [(1, 5, 13, 21)],
        lambda x: R.nn.relu(R.nn.conv2d(x, _w(12, 5, 3, 3), strides=stride, padding=1)),
        "Conv",
    )


def test_depthwise_conv() -> None:
    check(
        [(1, 16, 11, 19)],
        lambda x: R.nn.conv2d(x, _w(16, 1, 5, 5), padding=2, groups=16),
        "ConvDepthwise",
    )


def test_pointwise_conv_hardswish() -> None:
    def body(x: relax.Expr) -> relax.Expr:
        y = R.add(R.nn.conv2d(x, _w(24, 8, 1, 1)), _w(1, 24, 1, 1))
        six = relax.const(6.0)
        clip = R.minimum(R.maximum(R.add(y, relax.const(3.0)), relax.const(0.0)), six)
        return R.divide(R.multiply(y, clip), six)  # x * relu6(x + 3) / 6 reads y twice

    check([(1, 8, 6, 20)], body, "Matmul")  # 1x1 conv: plain indices, matmul-like


def test_conv1d() -> None:
    check([(1, 4, 50)], lambda x: R.nn.conv1d(x, _w(6, 4, 3), padding=1), "Conv")


def test_max_pool() -> None:
    check([(1, 8, 14, 22)], lambda x: R.nn.max_pool2d(x, 3, 2, padding=1), "Pool")


def test_avg_pool() -> None:
    check([(1, 8, 12, 12)], lambda x: R.nn.avg_pool2d(x, 2, 2), "Pool")


def test_softmax() -> None:
    check([(4, 12, 33)], lambda x: R.nn.softmax(x, axis=-1), "Norm")


def test_layer_norm() -> None:
    check([(2, 9, 40)], lambda x: R.nn.layer_norm(x, _w(40), _w(40), axes=[-1]), "Norm")


def test_global_mean() -> None:
    check([(1, 24, 7, 9)], lambda x: R.mean(x, axis=[2, 3], keepdims=True), "Norm")


def test_reduce_leading_axis() -> None:
    check([(30, 7, 5)], lambda x: R.sum(x, axis=[0]), "Reduction")


def test_elementwise_chain() -> None:
    check([(3, 20, 17)], lambda x: R.sigmoid(R.multiply(R.add(x, x), x)), "Elementwise")


def test_transpose_broadcast() -> None:
    check(
        [(4, 6, 10), (10,)],
        lambda x, b: R.add(R.permute_dims(x, [2, 0, 1]), R.reshape(b, (10, 1, 1))),
        "Elementwise",
    )


def test_arm_target_schedules_with_neon_width() -> None:
    """Cross-compiles (no run): the rules fire with NEON's 4-lane f32 vectors."""
    from edgec.targets.cpu.common import vector_lanes

    arm = get_target("arm-cpu:cortex-a72")
    assert vector_lanes(arm.tvm_target()) == 4
    defaults = ApplyCPUSchedules()
    mod = _module([(16, 32)], lambda x: R.nn.relu(R.matmul(x, _w(32, 24))))
    tvm.compile(mod, arm.tvm_target(), relax_pipeline=cpu_pipeline(arm, defaults=defaults))
    assert defaults.fired["Matmul"] == 1


@pytest.mark.parametrize("out_channels", [1, 6])
def test_conv_transpose_stride2_sigmoid(out_channels: int) -> None:
    # PP-OCR det's head: rewritten to a 1x1 conv + depth-to-space (conv_transpose.py).
    check(
        [(1, 8, 7, 10)],
        lambda x: R.sigmoid(R.nn.conv2d_transpose(x, _w(8, out_channels, 2, 2), strides=2)),
        "Matmul",
    )


def test_pointwise_conv_input_outweighs_weights() -> None:
    # Input tile reused across output-channel blocks (outer loop order swapped);
    # width 40: half-vector tiles on AVX-512.
    check([(1, 64, 10, 64)], lambda x: R.nn.relu(R.nn.conv2d(x, _w(48, 64, 1, 1))), "Matmul")


def test_pointwise_conv_short_reduction() -> None:
    # 12 input channels: tiles walk along the output rows (no swap, tiling._SHORT_REDUCTION).
    check([(1, 12, 10, 64)], lambda x: R.nn.relu(R.nn.conv2d(x, _w(40, 12, 1, 1))), "Matmul")


def test_conv3x3_width40() -> None:
    check([(1, 8, 6, 40)], lambda x: R.nn.conv2d(x, _w(16, 8, 3, 3), padding=1), "Conv")


def test_vector_width_prefers_whole_vectors() -> None:
    from edgec.targets.cpu.common import vector_width

    assert vector_width(160, 16) == 32  # two whole vectors
    assert vector_width(80, 16) == 16
    assert vector_width(40, 16) == 8  # not 20: a 20-lane vector spills
    assert vector_width(20, 16) == 4
    assert vector_width(13, 16) == 13  # below one vector: kept whole
    assert vector_width(17, 16) == 1
    assert vector_width(40, 4, 4) == 8
