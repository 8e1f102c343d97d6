"""Regular convs with a long channel reduction: the channel-blocked schedule is exact.

Channel counts of 32 and more take the blocked path (``conv._blockable``); widths
that are whole vectors, part vectors and odd, strides 1 and 2, fused epilogues.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.apply import ApplyCPUSchedules
from edgec.targets.cpu.conv import _blockable, _channel_blocked
from edgec.targets.cpu.tiling import reduction_kernel
from tvm import relax
from tvm.relax import op as R

HOST = get_target("host")
RNG = np.random.default_rng(5)


def _module(shape: tuple[int, ...], body: Callable[[relax.Expr], relax.Expr]) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(x))
        bb.emit_func_output(out)
    return bb.get()


def _w(*shape: int) -> relax.Constant:
    return relax.const(RNG.standard_normal(shape).astype("float32"))


def check(shape: tuple[int, ...], body: Callable[[relax.Expr], relax.Expr]) -> None:
    mod = _module(shape, body)
    x = RNG.standard_normal(shape).astype("float32")
    defaults = ApplyCPUSchedules()
    fast = tvm.compile(mod, HOST.tvm_target(), relax_pipeline=cpu_pipeline(HOST, defaults=defaults))
    plain = tvm.compile(mod, HOST.tvm_target())
    got, want = (relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
                 for ex in (fast, plain))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert defaults.fired["Conv"] == 1, dict(defaults.fired)


@pytest.mark.parametrize(("width", "stride"), [(32, 1), (40, 1), (37, 1), (33, 2)])
def test_channel_blocked_conv3x3(width: int, stride: int) -> None:
    check(
        (1, 48, 6, width),
        lambda x: R.nn.relu(R.add(R.nn.conv2d(x, _w(24, 48, 3, 3), strides=stride, padding=1),
                                  _w(1, 24, 1, 1))),
    )


def test_channel_blocked_conv1d() -> None:
    check((1, 64, 50), lambda x: R.nn.conv1d(x, _w(10, 64, 3), padding=1))


def test_blocked_path_is_taken() -> None:
    """The shapes above really use the blocked schedule (Conv falls back silently)."""
    mod = _module((1, 48, 6, 32), lambda x: R.nn.conv2d(x, _w(24, 48, 3, 3), padding=1))
    with HOST.tvm_target():
        legal = tvm.transform.Sequential(
            [relax.transform.LegalizeOps(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
        )(mod)
    funcs = [f for _, f in legal.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1
    found = reduction_kernel(funcs[0])
    assert not isinstance(found, str)
    assert _blockable(*found)
    _channel_blocked(*found, HOST.tvm_target())  # raises if a primitive refuses
