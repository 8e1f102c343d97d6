"""fuse-bias-act: matches become named composite functions; numerics unchanged."""

from __future__ import annotations

import numpy as np
from edgec.passes.fuse_bias_act import fuse_bias_act
from edgec.passes.registry import PassContext
from tvm import relax

from ._harness import build_main, c, run_relax, tensor

RNG = np.random.default_rng(3)
W = RNG.standard_normal((4, 8)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)


def _before(act: str):
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, c(W))), c(B)))
        if act == "hardswish":  # x * clip(x * 1/6 + 0.5, 0, 1)
            h = bb.emit(relax.op.clip(bb.emit(relax.op.add(
                bb.emit(relax.op.multiply(y, c(1 / 6))), c(0.5))), 0, 1))
            return relax.op.multiply(y, h)
        return relax.op.nn.gelu(y)

    return build_main({"x": tensor((2, 4))}, body)


def test_groups_matmul_bias_activation_into_named_composites() -> None:
    for act in ("gelu", "hardswish"):
        ctx = PassContext(target=None)
        after = fuse_bias_act(_before(act), ctx)
        assert ctx.report["fuse-bias-act"]["fired"] == {f"edgec.matmul_bias_{act}": 1}
        x = {"x": RNG.standard_normal((2, 4)).astype(np.float32)}
        np.testing.assert_allclose(run_relax(after, x), run_relax(_before(act), x), atol=1e-6)
