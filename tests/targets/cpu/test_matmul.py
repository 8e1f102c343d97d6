"""Dense layers with constant weights: packed into panels at build time, still exact.

``pack`` lays a constant ``W`` out as ``[N / nb, K, nb]``; the copy must be folded
into a new constant by the pipeline (not run per inference), on host and on arm.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu.apply import schedule_func
from edgec.targets.cpu.pipeline import graph_passes, schedule_passes
from tvm import relax, te, tirx
from tvm.relax import op as R
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from tests.targets.cpu.test_schedules import _module, _w, check


def _scheduled(mod: tvm.IRModule, target_name: str) -> tvm.IRModule:
    """``mod`` through the CPU pipeline up to (and including) the schedule phase."""
    target = get_target(target_name).tvm_target()
    with target:
        return tvm.transform.Sequential(
            graph_passes()
            + cpu_generic.library_dispatch_passes(target)
            + cpu_generic.legalize_passes(target)
            + schedule_passes(None)
        )(mod)


def _calls(mod: tvm.IRModule) -> list[str]:
    names: list[str] = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: names.append(e.args[0].name_hint)
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.call_tir" else None,
    )
    return names


def _prepacked(mod: tvm.IRModule) -> list[tirx.PrimFunc]:
    return [f for gv, f in mod.functions_items() if gv.name_hint.endswith("_prepacked")]


def test_dense_bias_gelu_384x1536_exact() -> None:
    check([(16, 384)], lambda x: R.nn.gelu(R.add(R.matmul(x, _w(384, 1536)), _w(1536))), "Matmul")


@pytest.mark.parametrize("target_name,nb", [("host", 32), ("arm-cpu:cortex-a72", 8)])
def test_weight_packed_and_folded(target_name: str, nb: int) -> None:
    mod = _scheduled(
        _module([(24, 96)], lambda x: R.add(R.matmul(x, _w(96, 64)), _w(64))), target_name
    )
    (kernel,) = _prepacked(mod)
    shapes = [[int(d) for d in p.ty.shape] for p in kernel.params]
    assert [64 // nb, 96, nb] in shapes, shapes
    # The packing copy ran at build time: main calls only the packed kernel.
    assert not any("weight_prepack" in c for c in _calls(mod)), _calls(mod)


def test_activation_operand_not_packed() -> None:
    mod = _scheduled(_module([(2, 16, 24), (2, 24, 32)], R.matmul), "host")
    assert not _prepacked(mod)


def test_transposed_weight_packed_in_kernel() -> None:
    """``W[j, k]`` (topi dense layout) packs too; without the Relax split the copy
    stays inside the kernel and the result is still exact."""
    a = te.placeholder((20, 48), name="a")
    w = te.placeholder((64, 48), name="w")
    k = te.reduce_axis((0, 48), name="k")
    c = te.compute((20, 64), lambda i, j: te.sum(a[i, k] * w[j, k], axis=k), name="c")
    func = te.create_prim_func([a, w, c]).with_attr("layout_free_buffers", [1])
    target = get_target("host").tvm_target()
    with target:
        new, rule = schedule_func(func, target)
    assert rule == "Matmul"
    assert "meta_schedule.layout_rewrite_preproc" in new.script()

    rng = np.random.default_rng(1)
    args = [rng.standard_normal((20, 48)).astype("float32"),
            rng.standard_normal((64, 48)).astype("float32"), np.zeros((20, 64), "float32")]
    lib = tvm.compile(tvm.IRModule({"main": new.with_attr("global_symbol", "main")}), target=target)
    out = tvm.runtime.tensor(args[2])
    lib["main"](tvm.runtime.tensor(args[0]), tvm.runtime.tensor(args[1]), out)
    np.testing.assert_allclose(out.numpy(), args[0] @ args[1].T, rtol=1e-5, atol=1e-5)


def test_unpacked_hand_written_kernel_beside_packed_dense() -> None:
    """TVM's split pass rejects a scatter's block-less TIR; it must not see it."""

    def body(x: relax.Expr) -> relax.Expr:
        y = R.matmul(x, _w(32, 16))
        idx = relax.const(np.array([[1, 3]] * 4, "int64"))
        return R.scatter_elements(y, idx, relax.const(np.ones((4, 2), "float32")), axis=1)

    check([(4, 32)], body, "Matmul")
    assert _prepacked(_scheduled(_module([(4, 32)], body), "host"))
