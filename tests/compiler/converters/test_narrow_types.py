"""Narrow element types (float8, float4, int4, int2) against ml_dtypes, ONNX's definition.

One model casts the same float32 input to every narrow type (and back); edgec's
outputs must equal what ml_dtypes computes, bit for bit (NaNs compared as NaN).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from edgec import onnx_backend
from edgec.converters import narrow_types
from onnx import TensorProto as P
from onnx import helper

FLOATS = [P.FLOAT8E4M3FN, P.FLOAT8E4M3FNUZ, P.FLOAT8E5M2, P.FLOAT8E5M2FNUZ, P.FLOAT4E2M1]
INTS = [P.INT4, P.UINT4, P.INT2, P.UINT2]


def _inputs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tab = np.concatenate([narrow_types._float_table(t).values for t in FLOATS])
    tab = tab[np.isfinite(tab)]
    mids = np.concatenate([narrow_types._float_table(t).mids for t in FLOATS])
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-7, -1e-7, 1e6, -1e6, 65504.0]
    values = np.concatenate([
        special, tab, -tab, mids, -mids,  # exact values and ties
        np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
        rng.standard_normal(500) * 10.0 ** rng.integers(-8, 6, 500),
    ])
    return values.astype(np.float32)


def _model(targets: list[tuple[int, int]]) -> onnx.ModelProto:
    """Input x: float32 -> one Cast output per (type, saturate), plus a round trip."""
    nodes, outputs = [], []
    for i, (to, sat) in enumerate(targets):
        attrs = {"saturate": sat} if to in narrow_types._FP8 else {}
        nodes.append(helper.make_node("Cast", ["x"], [f"y{i}"], to=to, **attrs))
        nodes.append(helper.make_node("Cast", [f"y{i}"], [f"z{i}"], to=P.FLOAT))
        outputs += [helper.make_tensor_value_info(f"y{i}", to, ["n"]),
                    helper.make_tensor_value_info(f"z{i}", P.FLOAT, ["n"])]
    graph = helper.make_graph(nodes, "narrow", [helper.make_tensor_value_info("x", P.FLOAT, ["n"])],
                              outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _expected(x: np.ndarray, to: int, sat: int) -> np.ndarray:
    dtype = helper.tensor_dtype_to_np_dtype(to)
    if to in narrow_types._FP8 and sat:
        return onnx.numpy_helper.saturate_cast(x, dtype)
    return x.astype(dtype)


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    g, w = got.astype(np.float32), want.astype(np.float32)
    bad = ~((g == w) | (np.isnan(g) & np.isnan(w)))
    # -0.0 and 0.0 compare equal as floats; their codes must match too.
    bad |= np.signbit(g) != np.signbit(w)
    assert not bad.any(), f"{want.dtype}: {bad.sum()} differ, e.g. {x_at(bad)}"


def x_at(bad: np.ndarray) -> list[int]:
    return np.flatnonzero(bad)[:5].tolist()


def test_float_casts_match_ml_dtypes() -> None:
    targets = [(t, s) for t in FLOATS for s in ((0, 1) if t in narrow_types._FP8 else (1,))]
    x = _inputs()
    got = onnx_backend.prepare(_model(targets)).run([x])
    for i, (to, sat) in enumerate(targets):
        want = _expected(x, to, sat)
        nan_signless = to in (P.FLOAT8E4M3FNUZ, P.FLOAT8E5M2FNUZ, P.FLOAT4E2M1)
        y, z = got[2 * i], got[2 * i + 1]
        if nan_signless:  # NaN has one code (or none): compare values, sign of 0 by code
            np.testing.assert_array_equal(y.view(np.uint8), want.view(np.uint8))
        else:
            _same(y, want)
        _same(z, want.astype(np.float32))


def test_int_casts_wrap_like_ml_dtypes() -> None:
    x = np.arange(-20, 21, dtype=np.float32) + np.float32(0.5) * (np.arange(41) % 3 == 0)
    got = onnx_backend.prepare(_model([(t, 1) for t in INTS])).run([x])
    for i, to in enumerate(INTS):
        want = _expected(x, to, 1)
        np.testing.assert_array_equal(got[2 * i].astype(np.int32), want.astype(np.int32))
        assert got[2 * i].dtype == want.dtype


def test_other_ops_on_narrow_types_are_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["b"])], "g",
        [helper.make_tensor_value_info("a", P.FLOAT8E4M3FN, [2])],
        [helper.make_tensor_value_info("b", P.FLOAT8E4M3FN, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(narrow_types.NotRewritable, match="Add"):
        narrow_types.lower(model)


def test_plain_models_are_untouched() -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["a"], ["b"], to=P.FLOAT16)], "g",
        [helper.make_tensor_value_info("a", P.FLOAT, [2])],
        [helper.make_tensor_value_info("b", P.FLOAT16, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    assert narrow_types.lower(model) == (model, {})
    assert ml_dtypes.int4 is not None  # the oracle these tests rely on
