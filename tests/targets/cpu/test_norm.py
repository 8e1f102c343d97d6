"""Row reductions (softmax, layer norm) with rfactor-vectorized partial results.

Exact against TVM's plain loops up to float rounding (the summation order changes),
on rows that are whole vectors (the rfactor path) and rows that are not (dlight's
schedule); the arm check cross-compiles with NEON's 4 lanes.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu.norm import _vector_reductions
from tvm import relax
from tvm.relax import op as R
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from tests.targets.cpu.test_schedules import _module, _w, check


def _kernel(shapes: list[tuple[int, ...]], body, name: str, target: tvm.target.Target):
    mod = _module(shapes, body)
    with target:
        mod = tvm.transform.Sequential(
            cpu_generic.legalize_passes(target)
        )(mod)
    return next(f for gv, f in mod.functions_items() if name in gv.name_hint)


@pytest.mark.parametrize("width", [128, 64])
def test_softmax_rows_of_whole_vectors(width: int) -> None:
    check([(2, 12, 9, width)], lambda x: R.nn.softmax(x, axis=-1), "Norm")


def test_softmax_masked_row() -> None:
    # An attention mask adds a huge negative: those entries must come out 0.
    def body(x: relax.Expr) -> relax.Expr:
        mask = np.zeros((1, 1, 1, 128), "float32")
        mask[..., 100:] = -3.4e38
        return R.nn.softmax(R.add(x, relax.const(mask)), axis=-1)

    check([(1, 4, 8, 128)], body, "Norm")


def test_layer_norm_384() -> None:
    check([(1, 20, 384)], lambda x: R.nn.layer_norm(x, _w(384), _w(384), axes=[-1]), "Norm")


def test_rfactor_path_taken_with_host_and_neon_lanes() -> None:
    """The vectorized-reduction schedule applies (not dlight's fallback) on both ISAs."""
    for name in ("host", "arm-cpu:cortex-a72"):
        target = get_target(name).tvm_target()
        func = _kernel([(1, 8, 384)], lambda x: R.nn.layer_norm(x, _w(384), _w(384), axes=[-1]),
                       "layer_norm", target)
        sch = _vector_reductions(func, target)
        assert sch is not None, name
        text = sch.mod["main"].script()
        assert "_rf" in text and "T.vectorized" in text


def test_row_of_odd_length_falls_back() -> None:
    target = get_target("host").tvm_target()
    func = _kernel([(3, 33)], lambda x: R.nn.softmax(x, axis=-1), "softmax", target)
    assert _vector_reductions(func, target) is None


def test_global_mean_over_two_axes() -> None:
    # SE block pooling: H and W reduced together (2 x 96 = 12 vectors of 16).
    check([(1, 40, 2, 96)], lambda x: R.mean(x, axis=[2, 3], keepdims=True), "Norm")
    target = get_target("host").tvm_target()
    func = _kernel([(1, 40, 2, 96)], lambda x: R.mean(x, axis=[2, 3], keepdims=True), "mean",
                   target)
    assert _vector_reductions(func, target) is not None


def test_half_vector_rows() -> None:
    # 40 = 5 x 8: half an AVX-512 vector per partial-result lane group.
    check([(6, 40)], lambda x: R.nn.softmax(x, axis=-1), "Norm")
