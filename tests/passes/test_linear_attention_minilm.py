"""linear-attention on all-MiniLM-L6-v2 (seq 128): detection, auto declines with reasons,
force rewrites, and both build and run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tvm
from edgec.calibration import split
from edgec.passes import linear_attention as la
from edgec.passes.attention_match import find_attention_blocks
from edgec.passes.registry import PassContext
from edgec.targets import get_target
from tvm import relax

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm() -> tuple[tvm.IRModule, list[dict[str, np.ndarray]]]:
    from edgec import frontend
    from edgec.examples.data import minilm_inputs
    from edgec.examples.models import model_path

    proto = frontend.load_model(model_path("minilm")).proto
    mod = frontend.to_relax(frontend.simplify(frontend.fix_input_shapes(proto, {})))
    return mod, minilm_inputs(3, 128, seed=0)


def _run(mod: tvm.IRModule, feeds: dict[str, np.ndarray]) -> np.ndarray:
    ex = tvm.compile(mod, target=get_target("host").tvm_target())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(feeds[p.name]) for p in mod["main"].params]).numpy()


def test_detects_six_blocks(minilm: Any) -> None:
    blocks = find_attention_blocks(minilm[0])
    assert len(blocks) == 6
    for b in blocks:
        s = b.summary()
        assert (s["N"], s["heads"], s["head_dim"]) == (128, 12, 32)
        assert s["mask"] == "additive (key padding)" and s["nan_guard"] and s["projections"]
        assert s["scale"].startswith(f"{32 ** -0.5:.6g} before")  # 32**-0.25 on q and on k


def test_auto_declines_at_n128_and_says_why(minilm: Any) -> None:
    """Auto on the calibration part of a split. MiniLM declines every block, so the
    held-out check of the error budget is trivially true (the model is unchanged:
    error 0 on any input); what is checked is the report behind the decision."""
    mod, samples = minilm
    data = split(samples, held_out_every=3)
    ctx = PassContext(target=get_target("host"), calib=data.calib,
                      options={"linear_attention": "auto", "attention_error": 0.02})
    out = la.linear_attention(mod, ctx)
    rep = ctx.report["linear-attention"]
    assert rep["changed"] == []
    tvm.ir.assert_structural_equal(out, mod)  # held out: identical model, error 0
    for entry in rep["blocks"]:
        assert entry["decision"] == "softmax"
        assert "error budget" in entry["why"] or "not faster" in entry["why"]
        assert entry["softmax_tap_check"] < 1e-4  # the taps see the model's own attention
        assert "softmax" in entry["latency_ms"]
        # measured after the attention output projection (MatMul + Add, 384 x 384)
        assert entry["error_at"].startswith("after the output projection"), entry
        assert entry["output_projection"].startswith("transpose -> reshape -> matmul W -> + bias")
        if "error budget" in entry["why"]:
            assert min(entry["errors"].values()) > rep["planning_budget"]


def test_force_nystrom_builds_runs_and_reports(minilm: Any) -> None:
    mod, calib = minilm
    ctx = PassContext(target=get_target("host"), calib=calib[:1],
                      options={"linear_attention": "force:nystrom:l=32"})
    new = la.linear_attention(mod, ctx)
    rep = ctx.report["linear-attention"]
    assert rep["changed"] == [f"attn{i}: nystrom(l=32)" for i in range(6)]
    assert 0 < rep["model_output_rel_error"] < 1.0  # approximate, not exact: measured
    for entry in rep["blocks"]:  # per-block error, after each output projection
        assert entry["error_at"].startswith("after the output projection")
        assert 0 < entry["error"] < 10
    out = _run(new, calib[0])
    assert out.shape == (1, 128, 384) and np.isfinite(out).all()
