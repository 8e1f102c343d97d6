"""The upsampling transposed-conv rewrite: when it fires, and that it is exact.

The reference is TVM's own legalization of the original ``conv2d_transpose``
(dilate + pad + conv, plain loops), built without the rewrite.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.conv_transpose import UpsampleConvTranspose
from tvm import relax
from tvm.relax import op as R

HOST = get_target("host")
RNG = np.random.default_rng(1)


def _module(x_shape: tuple[int, ...], w_shape: tuple[int, ...], **attrs: object) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    w = relax.const(RNG.standard_normal(w_shape).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.nn.conv2d_transpose(x, w, **attrs))
            out = bb.emit_output(R.sigmoid(R.add(y, relax.const(0.25))))
        bb.emit_func_output(out)
    return bb.get()


def _run(ex: tvm.runtime.Executable, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride"),
    [
        ((1, 8, 7, 10), (8, 3, 2, 2), 2),  # PP-OCR det's head, odd sizes
        ((2, 5, 4, 6), (5, 1, 3, 3), 3),  # batch 2, stride 3, one output channel
        ((1, 4, 5, 5), (4, 6, 2, 3), (2, 3)),  # non-square kernel
    ],
)
def test_upsampling_conv_transpose_is_exact(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: object
) -> None:
    mod = _module(x_shape, w_shape, strides=stride)
    rewrite = UpsampleConvTranspose()
    rewritten = rewrite(mod)
    assert rewrite.fired == 1
    text = rewritten.script()
    assert "conv2d_transpose" not in text and "R.nn.conv2d(" in text

    x = RNG.standard_normal(x_shape).astype("float32")
    fast = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST))
    plain = tvm.compile(mod, HOST.tvm_target())  # TVM's legalization of the original op
    np.testing.assert_allclose(_run(fast, x), _run(plain, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": 1},  # stride differs from the kernel: outputs overlap
        {"strides": 2, "padding": 1},
        {"strides": 2, "output_padding": 1},
    ],
)
def test_other_conv_transposes_are_left_alone(attrs: dict[str, object]) -> None:
    mod = _module((1, 4, 5, 5), (4, 2, 2, 2), **attrs)
    rewrite = UpsampleConvTranspose()
    assert "conv2d_transpose" in rewrite(mod).script()
    assert rewrite.fired == 0


def test_grouped_conv_transpose_is_left_alone() -> None:
    mod = _module((1, 4, 5, 5), (4, 1, 2, 2), strides=2, groups=4)
    rewrite = UpsampleConvTranspose()
    rewrite(mod)
    assert rewrite.fired == 0
