"""linear-attention: each variant's Relax lowering equals its numpy formula; masks are
exact; detection reads exporter-style graphs; auto mode decides from measured error and
(here, patched) cost."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import pytest
import tvm
from edgec.errors import EdgecError
from edgec.passes import all_passes
from edgec.passes import attention_auto as auto
from edgec.passes import attention_cost as cost
from edgec.passes import attention_reference as ref
from edgec.passes import linear_attention as la
from edgec.passes.attention_match import find_attention_blocks
from edgec.passes.registry import PassContext
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tests.passes._harness import import_onnx, run_ort

CHOICES = [la.Choice("favor", 64, 3), la.Choice("nystrom", 16), la.Choice("elu")]


def _run(mod: tvm.IRModule, args: list[np.ndarray]) -> Any:
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(a) for a in args])
    return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]


# ------------------------------------------------------------ lowering == formula


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "padmask"])
@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.variant)
def test_lowering_matches_numpy_formula(choice: la.Choice, masked: bool) -> None:
    shape = cost.Shape((2, 3), 64, 64, 16, 8, masked)
    args = cost.random_inputs(shape, seed=1, pad=13)
    got = _run(cost.standalone(shape, choice), args)
    want = la.reference(choice, *args[:3], args[3] if masked else None)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_softmax_block_matches_numpy() -> None:
    shape = cost.Shape((2,), 32, 32, 8, 8, True)
    args = cost.random_inputs(shape, seed=2, pad=5)
    np.testing.assert_allclose(_run(cost.standalone(shape, None), args),
                               ref.softmax_attention(*args), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- the mathematics


def test_favor_error_falls_as_m_grows_on_small_logits() -> None:
    shape = cost.Shape((4,), 128, 128, 32, 32, False)
    q, k, v = cost.random_inputs(shape, seed=0, logit_scale=0.25)
    exact = ref.softmax_attention(q, k, v)
    errs = []
    for m in (16, 64, 256, 1024):
        errs.append(np.mean([auto.rel_error(la.reference(la.Choice("favor", m, s), q, k, v, None),
                                            exact) for s in range(3)]))
    assert all(a > b for a, b in itertools.pairwise(errs)), errs
    assert errs[-1] < 0.05, errs  # Monte Carlo: ~1/sqrt(m)
    assert errs[-1] < errs[0] / 4, errs


def test_orthogonal_features_are_orthogonal_within_a_block() -> None:
    w = ref.orthogonal_features(40, 16, seed=5)
    block = w[:16] / np.linalg.norm(w[:16], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(16), atol=1e-5)
    assert w.shape == (40, 16)
    np.testing.assert_array_equal(w, ref.orthogonal_features(40, 16, seed=5))  # seeded


def test_newton_schulz_converges_to_pinv() -> None:
    rng = np.random.default_rng(0)
    a = ref._softmax(rng.standard_normal((3, 8, 8)) * 2).astype(np.float32)
    np.testing.assert_allclose(ref.newton_schulz_pinv(a, iters=20), np.linalg.pinv(a),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.variant)
def test_padding_keys_have_no_influence(choice: la.Choice) -> None:
    """Scrambling masked keys' k and v (even to large values) leaves the output unchanged."""
    shape = cost.Shape((2,), 64, 64, 16, 8, True)
    q, k, v, kb = cost.random_inputs(shape, seed=4, pad=16)
    k2, v2 = k.copy(), v.copy()
    k2[..., -16:, :] = 50.0
    v2[..., -16:, :] = -1e3
    a = _run(cost.standalone(shape, choice), [q, k, v, kb])
    b = _run(cost.standalone(shape, choice), [q, k2, v2, kb])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["favor", "elu"])
def test_padding_equals_dropping_the_keys(variant: str) -> None:
    """For feature-map variants, a padding mask is exactly attention over the kept keys."""
    shape = cost.Shape((2,), 48, 64, 16, 8, True)
    q, k, v, kb = cost.random_inputs(shape, seed=6, pad=24)
    c = la.Choice(variant, 64, 1)
    masked = la.reference(c, q, k, v, kb)
    kept = la.reference(c, q, k[..., :40, :], v[..., :40, :], None)
    np.testing.assert_allclose(masked, kept, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ detection on ONNX graphs


def _attention_onnx(n: int = 32, d: int = 8, heads: int = 2, mask: str = "additive",
                    scale: str = "div_after", proj: bool = False) -> onnx.ModelProto:
    """q/k/v projections, head split, scale, mask, softmax, @V, merge heads — as
    exporters write them. mask: additive | where | causal | none. ``proj``: then the
    output projection MatMul + Add."""
    rng = np.random.default_rng(0)
    hid = heads * d
    inits = [numpy_helper.from_array((rng.standard_normal((hid, hid)) * 0.3).astype(np.float32),
                                     f"w{c}") for c in "qkv"]
    inits += [numpy_helper.from_array(np.array([1, n, heads, d], np.int64), "split"),
              numpy_helper.from_array(np.array([1, n, hid], np.int64), "merge"),
              numpy_helper.from_array(np.array(np.sqrt(d), np.float32), "sqrtd"),
              numpy_helper.from_array(np.array(d ** -0.25, np.float32), "qscale"),
              numpy_helper.from_array(np.array(-1e4, np.float32), "neg"),
              numpy_helper.from_array(np.array([1, 1, 1, n], np.int64), "mshape")]
    nodes = []
    for c in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{c}"], [f"{c}0"]),
                  helper.make_node("Reshape", [f"{c}0", "split"], [f"{c}1"]),
                  helper.make_node("Transpose", [f"{c}1"], [f"{c}h"],
                                   perm=[0, 2, 3, 1] if c == "k" else [0, 2, 1, 3])]
    if scale == "div_after":
        nodes += [helper.make_node("MatMul", ["qh", "kh"], ["s0"]),
                  helper.make_node("Div", ["s0", "sqrtd"], ["s1"])]
    else:  # mul before, on both sides (torch dynamo style)
        nodes += [helper.make_node("Mul", ["qh", "qscale"], ["qs"]),
                  helper.make_node("Mul", ["kh", "qscale"], ["ks"]),
                  helper.make_node("MatMul", ["qs", "ks"], ["s1"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n, hid])]
    if mask == "additive":
        inputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, n]))
        nodes += [helper.make_node("Reshape", ["m", "mshape"], ["m4"]),
                  helper.make_node("Sub", ["one", "m4"], ["inv"]),
                  helper.make_node("Mul", ["inv", "neg"], ["bias"]),
                  helper.make_node("Add", ["s1", "bias"], ["s2"])]
        inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    elif mask == "where":
        inputs.append(helper.make_tensor_value_info("m", TensorProto.BOOL, [1, n]))
        nodes += [helper.make_node("Reshape", ["m", "mshape"], ["m4"]),
                  helper.make_node("Where", ["m4", "s1", "ninf"], ["s2"])]
        inits.append(numpy_helper.from_array(np.array(-np.inf, np.float32), "ninf"))
    elif mask == "causal":
        tri = np.triu(np.full((n, n), -1e4, np.float32), 1)
        inits.append(numpy_helper.from_array(tri, "tri"))
        nodes.append(helper.make_node("Add", ["s1", "tri"], ["s2"]))
    else:
        nodes.append(helper.make_node("Identity", ["s1"], ["s2"]))
    nodes += [helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "vh"], ["o0"]),
              helper.make_node("Transpose", ["o0"], ["o1"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["o1", "merge"], ["o2" if proj else "y"])]
    if proj:
        inits += [numpy_helper.from_array(
            (rng.standard_normal((hid, hid)) * 0.3).astype(np.float32), "wo"),
            numpy_helper.from_array(rng.standard_normal(hid).astype(np.float32), "bo")]
        nodes += [helper.make_node("MatMul", ["o2", "wo"], ["o3"]),
                  helper.make_node("Add", ["o3", "bo"], ["y"])]
    graph = helper.make_graph(nodes, "attn", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n, hid])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _feeds(mask: str, n: int = 32, hid: int = 16, pad: int = 7, seed: int = 0
           ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((1, n, hid)).astype(np.float32)}
    keep = np.ones((1, n), np.float32)
    keep[:, n - pad:] = 0
    if mask == "additive":
        feeds["m"] = keep
    elif mask == "where":
        feeds["m"] = keep.astype(bool)
    return feeds


@pytest.mark.parametrize("mask,scale", [("additive", "div_after"), ("where", "mul_before"),
                                        ("none", "div_after")])
def test_detects_block_fields(mask: str, scale: str) -> None:
    blocks = find_attention_blocks(import_onnx(_attention_onnx(mask=mask, scale=scale)))
    assert len(blocks) == 1
    b = blocks[0].summary()
    assert (b["N"], b["heads"], b["head_dim"]) == (32, 2, 8)
    assert b["linearizable"] and b["projections"]
    assert b["mask"].startswith(mask)
    if scale == "div_after":
        assert b["scale"] == f"{1 / np.sqrt(8):.6g} after QK^T"
    else:
        assert b["scale"] == f"{1 / np.sqrt(8):.6g} before QK^T"


def test_query_dependent_bias_is_left_alone_with_reason() -> None:
    mod = import_onnx(_attention_onnx(mask="causal"))
    (b,) = find_attention_blocks(mod)
    assert not b.linearizable and "query" in b.reason
    ctx = PassContext(target=None, options={"linear_attention": "force:favor"})
    out = la.linear_attention(mod, ctx)
    tvm.ir.assert_structural_equal(out, mod)
    entry = ctx.report["linear-attention"]["blocks"][0]
    assert entry["decision"] == "softmax" and "query" in entry["why"]


@pytest.mark.parametrize("mask", ["additive", "where"])
@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.variant)
def test_rewrite_in_a_model_computes_the_formula(choice: la.Choice, mask: str) -> None:
    """The rewritten model's output is the variant's formula on the block's own q, k, v."""
    proto = _attention_onnx(mask=mask)
    feeds = _feeds(mask)
    mod = import_onnx(proto)
    (b,) = find_attention_blocks(mod)
    (tap,) = auto.tap_blocks(mod, [b], [feeds])
    new = la.apply_plan(mod, {0: choice})
    assert not find_attention_blocks(new)  # no softmax block left
    got = _run(new, list(feeds.values()))
    o = la.reference(choice, tap["q"][0], tap["k"][0], tap["v"][0], tap["kb"][0])
    want = o.transpose(0, 2, 1, 3).reshape(got.shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # and the tapped softmax output is the model's own (ONNX Runtime) attention
    exact = ref.softmax_attention(tap["q"][0], tap["k"][0], tap["v"][0], tap["kb"][0])
    np.testing.assert_allclose(exact.transpose(0, 2, 1, 3).reshape(got.shape),
                               run_ort(proto, feeds), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------- output projection and error


def test_detects_output_projection() -> None:
    (b,) = find_attention_blocks(import_onnx(_attention_onnx(proj=True)))
    assert b.projection is not None
    assert [op for op, _ in b.projection.steps] == ["permute", "reshape", "matmul", "add"]
    assert b.summary()["output_projection"].startswith("transpose -> reshape -> matmul W -> + bias")
    (b0,) = find_attention_blocks(import_onnx(_attention_onnx(proj=False)))
    assert b0.projection is None
    assert b0.summary()["output_projection"] == (
        "none (the head merge goes straight to the function's output)")


def test_matmul_on_part_of_the_heads_is_not_the_output_projection() -> None:
    """A matmul after a reshape that keeps heads apart (rows of d values) is not the
    projection of the merged heads: the error stays at softmax.V, with the reason."""
    n, d = 16, 8
    t = relax.TensorType([1, 2, n, d], "float32")
    q, k, v = (relax.Var(x, t) for x in "qkv")
    bb = relax.BlockBuilder()
    with bb.function("main", [q, k, v]):
        with bb.dataflow():
            o = bb.emit(cost.softmax_block(bb.emit, q, k, v, None))
            o = bb.emit(relax.op.reshape(relax.op.permute_dims(o, [0, 2, 1, 3]), (1, 2 * n, d)))
            w = relax.const(np.ones((d, d), np.float32))
            out = bb.emit_output(relax.op.matmul(o, w))
        bb.emit_func_output(out)
    (b,) = find_attention_blocks(bb.get())
    assert b.projection is None
    assert b.projection_note == "matmul after the block contracts 8 values, not heads x value dim = 16"


def test_projection_replay_is_the_models_projection() -> None:
    """The numpy replay of the merge + projection on the tapped softmax.V is the model's
    own output (ONNX Runtime): the per-block error is measured where the model uses it."""
    proto = _attention_onnx(proj=True)
    feeds = _feeds("additive")
    mod = import_onnx(proto)
    (b,) = find_attention_blocks(mod)
    (tap,) = auto.tap_blocks(mod, [b], [feeds])
    np.testing.assert_allclose(b.projection.apply(tap["o"], lead=1)[0], run_ort(proto, feeds),
                               rtol=1e-4, atol=1e-4)


def test_force_reports_block_error_after_projection() -> None:
    """Here the projection is the model output, so the block error the report gives must
    equal the rewritten model's error against ONNX Runtime (worst sample)."""
    proto = _attention_onnx(proj=True)
    calib = [_feeds("additive", seed=s) for s in range(2)]
    mod = import_onnx(proto)
    ctx = PassContext(target=None, calib=calib, options={"linear_attention": "force:favor:m=16"})
    new = la.linear_attention(mod, ctx)
    rep = ctx.report["linear-attention"]
    entry = rep["blocks"][0]
    assert entry["error_at"].startswith("after the output projection")
    want = max(auto.rel_error(_run(new, list(f.values())), run_ort(proto, f)) for f in calib)
    assert want > 1e-3  # favor with 16 features is far from exact: a real measurement
    assert entry["error"] == pytest.approx(want, rel=1e-3)
    assert rep["model_output_rel_error"] == pytest.approx(want, rel=1e-3)


# ------------------------------------------------------------------- pass and modes


def test_pass_is_registered_off_by_default() -> None:
    info = all_passes()["linear-attention"]
    assert info.phase == "optimize" and not info.default


@pytest.mark.parametrize("text,want", [
    ("auto", ("auto", "", None)), ("off", ("off", "", None)),
    ("force:favor", ("force", "favor", None)), ("force:favor:m=64", ("force", "favor", 64)),
    ("force:nystrom:l=8", ("force", "nystrom", 8)), ("force:elu", ("force", "elu", None))])
def test_parse_mode(text: str, want: tuple[str, str, int | None]) -> None:
    m = la.parse_mode({"linear_attention": text, "attention_error": 0.1})
    assert (m.kind, m.variant, m.param) == want and m.error_budget == 0.1


@pytest.mark.parametrize("text", ["force", "force:softmax", "fast", "force:favor:m=x"])
def test_parse_mode_rejects(text: str) -> None:
    with pytest.raises(EdgecError, match="linear-attention"):
        la.parse_mode({"linear_attention": text})


def test_force_rejects_bad_landmark_count_per_block() -> None:
    mod = import_onnx(_attention_onnx())
    ctx = PassContext(target=None, options={"linear_attention": "force:nystrom:l=5"})
    tvm.ir.assert_structural_equal(la.linear_attention(mod, ctx), mod)
    entry = ctx.report["linear-attention"]["blocks"][0]
    assert entry["decision"] == "softmax" and "does not divide" in entry["why"]


def test_auto_without_calibration_declines() -> None:
    mod = import_onnx(_attention_onnx())
    ctx = PassContext(target=None, options={"linear_attention": "auto"})
    out = la.linear_attention(mod, ctx)
    tvm.ir.assert_structural_equal(out, mod)
    assert "calibration" in ctx.report["linear-attention"]["blocks"][0]["why"]


def _fake_cost(linear_faster: bool) -> Any:
    def measure(shape: cost.Shape, choice: la.Choice | None, target: Any = None, **_: Any) -> float:
        base = cost.flops(shape, None)
        if choice is None:
            return base
        return base / 2 if linear_faster else base * 2
    return measure


def _small_logit_model() -> tuple[tvm.IRModule, list[dict[str, np.ndarray]]]:
    # x scaled down: small logits, where FAVOR+/Nystrom approximate softmax well
    mod = import_onnx(_attention_onnx(n=64, mask="additive"))
    calib = [_feeds("additive", n=64, seed=s) for s in range(2)]
    for f in calib:
        f["x"] *= 0.05
    return mod, calib


def test_auto_rewrites_when_accurate_and_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "measure", _fake_cost(linear_faster=True))
    mod, calib = _small_logit_model()
    ctx = PassContext(target=None, calib=calib,
                      options={"linear_attention": "auto", "attention_error": 0.05})
    new = la.linear_attention(mod, ctx)
    rep = ctx.report["linear-attention"]
    assert rep["changed"], rep
    assert rep["model_output_rel_error"] <= 0.05
    entry = rep["blocks"][0]
    assert entry["errors"][entry["decision"]] <= 0.05 * auto.PLAN_FRACTION
    assert entry["error_at"].startswith("softmax.V: no output projection")  # none here
    assert not find_attention_blocks(new)


def test_auto_declines_when_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "measure", _fake_cost(linear_faster=False))
    mod, calib = _small_logit_model()
    ctx = PassContext(target=None, calib=calib,
                      options={"linear_attention": "auto", "attention_error": 0.05})
    out = la.linear_attention(mod, ctx)
    tvm.ir.assert_structural_equal(out, mod)
    assert "not faster" in ctx.report["linear-attention"]["blocks"][0]["why"]


def test_auto_declines_when_over_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "measure", _fake_cost(linear_faster=True))
    mod, calib = _small_logit_model()
    ctx = PassContext(target=None, calib=calib,
                      options={"linear_attention": "auto", "attention_error": 1e-6})
    out = la.linear_attention(mod, ctx)
    tvm.ir.assert_structural_equal(out, mod)
    assert "error budget" in ctx.report["linear-attention"]["blocks"][0]["why"]
