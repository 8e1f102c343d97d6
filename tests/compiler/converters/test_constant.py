"""Constant's value_int(s)/value_float(s) attributes, and a folded Shape, against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as P
from onnx import helper

from tests.compiler.converters._one_node import compare, edgec, model


@pytest.mark.parametrize("attr,value,elem", [
    ("value_ints", [3, -4, 5], P.INT64), ("value_floats", [0.5, -2.0], P.FLOAT),
    ("value_int", 7, P.INT64), ("value_float", 1.25, P.FLOAT),
])
def test_constant_value_attributes(attr: str, value: object, elem: int) -> None:
    x = np.ones(1, np.float32)
    m = model("Constant", {}, elem, 21, **{attr: value})
    # A graph input keeps the model non-empty for ONNX Runtime; the output ignores it.
    m.graph.input.append(helper.make_tensor_value_info("x", P.FLOAT, [1]))
    got = edgec(m, {"x": x})
    np.testing.assert_array_equal(got, np.asarray(value, got.dtype))
    compare(m, {"x": x})


def test_shape_of_input_is_folded() -> None:
    x = np.zeros((2, 3, 4), np.float32)
    compare(model("Shape", {"x": x}, P.INT64, 21, start=1), {"x": x})
