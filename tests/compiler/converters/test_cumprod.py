"""CumProd (exclusive, reverse, any axis) against NumPy's cumprod."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as P

from tests.compiler.converters._one_node import edgec, model


def reference(x: np.ndarray, axis: int, exclusive: int, reverse: int) -> np.ndarray:
    y = np.flip(x, axis) if reverse else x
    out = np.cumprod(y, axis=axis)
    if exclusive:
        ones = np.ones_like(np.take(y, [0], axis=axis))
        out = np.concatenate([ones, np.delete(out, -1, axis=axis)], axis=axis)
    return np.flip(out, axis) if reverse else out


@pytest.mark.parametrize("axis,exclusive,reverse", [(0, 0, 0), (1, 1, 0), (-1, 0, 1), (0, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_cumprod(axis: int, exclusive: int, reverse: int, dtype: type) -> None:
    x = (np.arange(12).reshape(3, 4) % 5 - 1).astype(dtype)
    feeds = {"x": x, "axis": np.array(axis, np.int64)}
    m = model("CumProd", feeds, P.FLOAT if dtype == np.float32 else P.INT32, 26,
              exclusive=exclusive, reverse=reverse)
    got = edgec(m, feeds)
    np.testing.assert_array_equal(got, reference(x, axis, exclusive, reverse))
    assert got.dtype == dtype
