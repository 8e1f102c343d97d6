"""The polynomial exp/erf/tanh/sigmoid/GELU/softmax that replace libm calls on CPU.

Accuracy is measured against numpy / math.erf in float64 over the whole float32
range that matters (including the saturated tails), and the pass must leave other
dtypes alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu.fast_math import FastMath
from tvm import relax
from tvm.relax import op as R

from tests.targets.cpu.test_schedules import _module, check

HOST = get_target("host")
# Documented bound in fast_math.py (measured 3.3e-7); a float32 ulp is 1.2e-7.
REL_TOL = 5e-7

_erf = np.vectorize(math.erf)


def _gelu(x: np.ndarray) -> np.ndarray:
    return x * (0.5 + 0.5 * _erf(x / math.sqrt(2.0)))


CASES = [
    ("exp", R.exp, np.exp, (-87.0, 88.0)),
    ("erf", R.erf, _erf, (-8.0, 8.0)),
    ("tanh", R.tanh, np.tanh, (-12.0, 12.0)),
    ("sigmoid", R.sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x)), (-80.0, 30.0)),
    ("gelu", R.nn.gelu, _gelu, (-10.0, 10.0)),
]


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    from edgec.targets.cpu import cpu_pipeline

    ex = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("name,op,ref,span", CASES, ids=[c[0] for c in CASES])
def test_accuracy(name: str, op, ref, span: tuple[float, float]) -> None:
    x = np.linspace(*span, 1 << 15, dtype="float32")
    got = _run(_module([x.shape], op), x).astype("float64")
    want = ref(x.astype("float64"))
    # GELU's 0.5 + 0.5 * erf(x) cancels for x << 0 in any float32 evaluation (libm's
    # erff too): its error is relative to |x| there, not to the tiny result.
    scale = np.maximum(np.abs(want), np.abs(x)) if name == "gelu" else np.abs(want)
    normal = scale > 1e-30  # relative error where the result is a normal float32
    err = np.abs(got - want)[normal] / scale[normal]
    assert np.max(err) < REL_TOL, (name, float(np.max(err)))
    assert np.all(np.isfinite(got))


def _ops(mod: tvm.IRModule) -> set[str]:
    names: set[str] = set()
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(
                func.body,
                lambda e: names.add(e.op.name)
                if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None,
            )
    return names


def test_pass_rewrites_float32_only() -> None:
    def body(x: relax.Expr) -> relax.Expr:
        return R.nn.softmax(R.nn.gelu(R.erf(R.exp(x))), axis=-1)

    after = FastMath()(_module([(4, 8)], body))
    assert not _ops(after) & {"relax.exp", "relax.erf", "relax.nn.gelu", "relax.nn.softmax"}

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 8), "float64"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(R.exp(x))
        bb.emit_func_output(out)
    assert "relax.exp" in _ops(FastMath()(bb.get()))


def test_saturated_inputs() -> None:
    # Beyond the polynomials' clamp: exp -> 0 / finite, tanh/erf -> +-1, sigmoid -> 0/1.
    x = np.array([-1e30, -200.0, -100.0, 100.0, 200.0, 1e30], "float32")
    np.testing.assert_allclose(_run(_module([x.shape], R.tanh), x), np.sign(x), atol=1e-7)
    np.testing.assert_allclose(_run(_module([x.shape], R.erf), x), np.sign(x), atol=1e-7)
    np.testing.assert_allclose(_run(_module([x.shape], R.sigmoid), x), x > 0, atol=1e-7)
    assert np.all(_run(_module([x[:3].shape], R.exp), x[:3]) < 1e-37)


def test_softmax_through_pipeline() -> None:
    check([(3, 128)], lambda x: R.nn.softmax(x, axis=-1), "Norm")
