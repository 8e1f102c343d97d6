"""linear-attention auto mode keeps to its error budget on held-out inputs.

The calibration samples are split with ``edgec.calibration.split``; auto mode sees only
the calibration part. The errors on the held-out part are measured against ONNX
Runtime (the oracle) on a probe copy of the model that also outputs every block's
output projection, and must be within the budget for every rewritten block and at the
model output, per held-out sample (the report's definition: the largest per-sample
relative error).

The model is a two-layer encoder at N = 256 whose inputs are smooth along the
sequence (a few low-frequency components), so the attention logits are nearly low
rank: Nystrom with few landmarks is accurate there, and at this N it takes far fewer
FLOPs than the softmax block (the cost auto mode is given here), so it really rewrites.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from edgec.calibration import split
from edgec.passes import attention_auto as auto
from edgec.passes import attention_cost as cost
from edgec.passes import linear_attention as la
from edgec.passes.attention_match import find_attention_blocks
from edgec.passes.registry import PassContext
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tests.passes._harness import import_onnx

N, HEADS, D, LAYERS = 256, 2, 64, 2
HID = HEADS * D


def encoder_onnx(probe: bool = False, seed: int = 0) -> onnx.ModelProto:
    """LAYERS x (q/k/v MatMul+Add, head split, QK^T / sqrt(d), key-padding bias, Softmax,
    @V, head merge, output MatMul+Add, residual). ``probe``: every layer's output
    projection is also a graph output."""
    rng = np.random.default_rng(seed)

    def init(name: str, value: Any) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [init("split", np.array([1, N, HEADS, D], np.int64)),
             init("merge", np.array([1, N, HID], np.int64)),
             init("mshape", np.array([1, 1, 1, N], np.int64)),
             init("sqrtd", np.array(np.sqrt(D), np.float32)),
             init("one", np.array(1.0, np.float32)), init("neg", np.array(-1e4, np.float32))]
    nodes = [helper.make_node("Reshape", ["m", "mshape"], ["m4"]),
             helper.make_node("Sub", ["one", "m4"], ["inv"]),
             helper.make_node("Mul", ["inv", "neg"], ["bias"])]
    x, projs = "x", []
    for layer in range(LAYERS):
        p = f"l{layer}_"
        for c in "qkvo":
            inits += [init(p + "w" + c, (rng.standard_normal((HID, HID)) / np.sqrt(HID))
                           .astype(np.float32)),
                      init(p + "b" + c, (rng.standard_normal(HID) * 0.1).astype(np.float32))]
        for c in "qkv":
            nodes += [helper.make_node("MatMul", [x, p + "w" + c], [p + c + "0"]),
                      helper.make_node("Add", [p + c + "0", p + "b" + c], [p + c + "1"]),
                      helper.make_node("Reshape", [p + c + "1", "split"], [p + c + "2"]),
                      helper.make_node("Transpose", [p + c + "2"], [p + c + "h"],
                                       perm=[0, 2, 3, 1] if c == "k" else [0, 2, 1, 3])]
        nodes += [helper.make_node("MatMul", [p + "qh", p + "kh"], [p + "s0"]),
                  helper.make_node("Div", [p + "s0", "sqrtd"], [p + "s1"]),
                  helper.make_node("Add", [p + "s1", "bias"], [p + "s2"]),
                  helper.make_node("Softmax", [p + "s2"], [p + "p"], axis=-1),
                  helper.make_node("MatMul", [p + "p", p + "vh"], [p + "o0"]),
                  helper.make_node("Transpose", [p + "o0"], [p + "o1"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [p + "o1", "merge"], [p + "o2"]),
                  helper.make_node("MatMul", [p + "o2", p + "wo"], [p + "o3"]),
                  helper.make_node("Add", [p + "o3", p + "bo"], [p + "proj"]),
                  helper.make_node("Add", [x, p + "proj"], [p + "y"])]
        projs.append(p + "proj")
        x = p + "y"
    outs = [x] + (projs if probe else [])
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N, HID]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, N, HID]) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def smooth_feeds(seed: int) -> dict[str, np.ndarray]:
    """Tokens varying smoothly along the sequence (4 low frequencies, 5% noise) and a
    random amount of key padding (up to N/8)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / N
    x = np.zeros((N, HID))
    for f in range(1, 5):
        x += np.outer(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)),
                      rng.standard_normal(HID)) / f
    x += 0.05 * rng.standard_normal((N, HID))
    m = np.ones((1, N), np.float32)
    m[:, N - int(rng.integers(0, N // 8)):] = 0
    return {"x": x[None].astype(np.float32), "m": m}


def _run_tvm(mod: tvm.IRModule, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})),
                              tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds[p.name]) for p in mod["main"].params])
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def _plan_from_report(rep: dict[str, Any]) -> dict[int, la.Choice]:
    """The rewrites the report says were applied, rebuilt from its fields alone."""
    plan = {}
    for i, entry in enumerate(rep["blocks"]):
        if entry["decision"] != "softmax":
            v = entry["variant"]
            plan[i] = la.Choice(v, entry.get(la.PARAM_NAME[v], 0), entry.get("seed", 0))
    return plan


# 0.05: both blocks are rewritten; 0.02: one, with more landmarks. Measured held-out
# errors reach 1.8x the calibration ones here (0.0166 vs 0.0093 at 0.02), which is why
# auto mode plans at half the budget (attention_auto.PLAN_FRACTION).
@pytest.mark.parametrize("budget", [0.02, 0.05])
def test_auto_stays_within_budget_on_held_out_inputs(budget: float,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # "faster" from FLOP counts, not from timing this host: a loaded machine measured the
    # softmax block as fast, auto declined, and the test had nothing to check (its subject
    # is accuracy; the timing cost model has its own tests)
    monkeypatch.setattr(cost, "measure", lambda shape, choice, target=None, **_:
                        cost.flops(shape, choice))
    data = split([smooth_feeds(s) for s in range(6)], held_out_every=3, source="smooth")
    assert len(data.calib) == 4 and len(data.held_out) == 2
    mod = import_onnx(encoder_onnx())
    ctx = PassContext(target=None, calib=data.calib,
                      options={"linear_attention": "auto", "attention_error": budget})
    new = la.linear_attention(mod, ctx)
    rep = ctx.report["linear-attention"]
    plan = _plan_from_report(rep)
    assert plan, rep  # the test is only meaningful if something was rewritten
    assert len(find_attention_blocks(new)) == LAYERS - len(plan)
    assert rep["planning_budget"] == pytest.approx(budget * auto.PLAN_FRACTION)
    assert rep["model_output_rel_error"] <= rep["planning_budget"]
    for i in plan:
        entry = rep["blocks"][i]
        assert entry["error"] <= rep["planning_budget"]
        assert entry["error_at"].startswith("after the output projection"), entry

    # held out: the probe model outputs y and each layer's projection; ORT is exact
    probe = encoder_onnx(probe=True)
    probe_new = la.apply_plan(import_onnx(probe), plan)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    for feeds in data.held_out:
        exact = sess.run(None, feeds)
        got = _run_tvm(probe_new, feeds)
        assert auto.rel_error(got[0], exact[0]) <= budget  # model output
        for i in plan:
            err = auto.rel_error(got[1 + i], exact[1 + i])
            assert 0 < err <= budget, (i, err)  # > 0: the rewrite really is approximate
