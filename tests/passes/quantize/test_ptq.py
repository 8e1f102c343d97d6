"""quantize_onnx's accuracy budget in the npu style: when the element-wise activations
it adds (a residual stream with an outlier channel) are what int8 cannot hold, they go
back to float and the search runs again, instead of refusing the budget."""

from __future__ import annotations

import numpy as np
import onnx
from edgec.passes.quantize.accuracy import parse_budget
from edgec.passes.quantize.ptq import quantize_onnx
from onnx import TensorProto, helper, numpy_helper


def _residual_ln_model() -> onnx.ModelProto:
    """MatMul -> add a residual stream r -> scale per channel -> MatMul: r has an outlier
    channel that the scale g zeroes out, so int8 on the add's output (one scale for the
    outlier and the rest) loses what the next layer needs. (A BERT layer has layer norm
    there, a CPU op, and its input then stays float without any budget:
    ``test_onnx_graph``.)"""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 8)) * 0.3).astype(np.float32)
    gamma = np.where(np.arange(16) == 3, 0, 1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
             helper.make_node("Add", ["a", "r"], ["s"], name="res"),
             helper.make_node("Mul", ["s", "g"], ["t"], name="scale"),
             helper.make_node("MatMul", ["t", "w2"], ["y"], name="mm2")]
    g = helper.make_graph(
        nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 16]),
                       helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(gamma, "g")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _feeds(n: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    out = []
    for _ in range(n):
        r = rng.standard_normal((1, 6, 16)).astype(np.float32) * 0.05
        r[..., 3] = 1000.0 * np.sign(rng.standard_normal((1, 6)))
        out.append({"x": rng.standard_normal((1, 6, 16)).astype(np.float32), "r": r})
    return out


def test_npu_style_puts_the_residual_stream_back_in_float_to_meet_the_budget() -> None:
    rng = np.random.default_rng(1)
    calib, held = _feeds(8, rng), _feeds(4, rng)
    budget = parse_budget("cosine=0.999")
    res = quantize_onnx(_residual_ln_model(), calib, held, "minmax", budget=budget,
                        style="npu")
    r = res.report
    assert budget.met(r["accuracy"])
    assert r["kept_float"] == [] and r["element_wise_float"] == 2
    # the search first tried the npu style's extra activations in int8, and failed
    first = [t for t in r["budget_search"] if t["extra"]]
    assert first and all(t["cosine"] < 0.999 for t in first)
    # without a budget the npu style keeps them in int8, as before
    plain = quantize_onnx(_residual_ln_model(), calib, held, "minmax", style="npu")
    assert plain.report["element_wise_float"] == 0
    assert plain.report["accuracy"]["y"]["cosine"] < 0.999


def _matmul_model() -> onnx.ModelProto:
    w = (np.random.default_rng(0).standard_normal((32, 16)) * 0.3).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 16])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _spiky(n: int, rng: np.random.Generator, spikes: bool, wild: bool = False
           ) -> list[dict[str, np.ndarray]]:
    out = []
    for i in range(n):
        x = rng.standard_normal((1, 256, 32)).astype(np.float32)
        if spikes and i % 2 == 0:  # a rare large value that matters, as a transformer's
            x.reshape(-1)[rng.integers(x.size)] = 40.0
        if wild and i == 0:  # one glitch in one calibration sample
            x[0, 0, 0] = 1000.0
        out.append({"x": x})
    return out


def test_auto_keeps_the_method_more_accurate_on_held_out_samples() -> None:
    """``auto`` is the better of percentile and minmax on the held-out samples: minmax
    when samples carry a rare large value (percentile clips it), percentile
    when one calibration sample holds a glitch (minmax spends the grid on it). Its
    parameters and accuracy are those the chosen method gives on its own."""
    rng = np.random.default_rng(2)
    for spikes, wild, winner in ((True, False, "minmax"), (False, True, "percentile")):
        calib, held = _spiky(8, rng, spikes, wild), _spiky(3, rng, spikes)
        res = {m: quantize_onnx(_matmul_model(), calib, held, m, with_sensitivity=False)
               for m in ("auto", "percentile", "minmax")}
        cos = {m: r.report["accuracy"]["y"]["cosine"] for m, r in res.items()}
        assert cos[winner] > cos[({"minmax", "percentile"} - {winner}).pop()]
        auto = res["auto"].report
        assert auto["method"] == winner and auto["auto"]["chosen"] == winner
        assert auto["auto"]["held_out_cosine"] == {m: cos[m] for m in ("percentile", "minmax")}
        assert res["auto"].params == res[winner].params and cos["auto"] == cos[winner]
    assert res["minmax"].report["auto"] is None
