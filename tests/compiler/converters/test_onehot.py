"""OneHot with float depth, float indices and negative axes against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as P

from tests.compiler.converters._one_node import compare, edgec, model


@pytest.mark.parametrize("axis", [-1, -2, 0, 1])
def test_onehot_float_depth_and_indices(axis: int) -> None:
    indices = np.array([[1.0, 9.0, -7.0], [2.0, 5.0, 0.0]], np.float32)
    consts = {"depth": np.array(10.0, np.float32), "values": np.array([2.0, 5.0], np.float32)}
    m = model("OneHot", {"indices": indices}, P.FLOAT, 11, consts=consts, axis=axis)
    compare(m, {"indices": indices})


def test_onehot_values_type_is_kept() -> None:
    """int32 values (ONNX Runtime has no kernel for them): checked against np.eye."""
    indices = np.array([0, 3, -1], np.int64)
    consts = {"depth": np.array([4], np.int64), "values": np.array([7, 9], np.int32)}
    got = edgec(model("OneHot", {"indices": indices}, P.INT32, 11, consts=consts),
                {"indices": indices})
    want = np.where(np.eye(4, dtype=bool)[indices], 9, 7).astype(np.int32)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
