"""The padding pass before convs and pools: vectorized rows (tail predicated), exact.

Row lengths after padding: a multiple of the vector, one more than a multiple
(predicated last vector), and shorter than one vector.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.common import vector_lanes
from tvm import relax
from tvm.relax import op as R

HOST = get_target("host")
RNG = np.random.default_rng(3)
LANES = vector_lanes(HOST.tvm_target())


def _check(shape: tuple[int, ...], body: Callable[[relax.Expr], relax.Expr]) -> None:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(x))
        bb.emit_func_output(out)
    mod = bb.get()
    data = RNG.standard_normal(shape).astype("float32")
    outs = []
    for ex in (
        tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST)),
        tvm.compile(mod, HOST.tvm_target()),  # TVM's plain loops
    ):
        outs.append(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [2 * LANES - 2, 2 * LANES - 1, LANES // 2 - 2])
def test_conv3x3_padded_rows(width: int) -> None:
    w = relax.const(RNG.standard_normal((6, 4, 3, 3)).astype("float32"))
    _check((1, 4, 5, width), lambda x: R.nn.conv2d(x, w, padding=1))


def test_max_pool_pads_with_lowest() -> None:
    # All-negative input: a zero pad would win the max at the borders.
    _check((1, 3, 9, 2 * LANES + 3), lambda x: R.nn.max_pool2d(R.negative(R.abs(x)), 3, 1, padding=1))
