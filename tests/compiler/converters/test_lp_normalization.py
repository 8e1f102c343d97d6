"""LpNormalization (p=1, p=2, any axis) against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as P

from tests.compiler.converters._one_node import compare, model


@pytest.mark.parametrize("p,axis", [(1, -1), (2, 0), (2, 1)])
def test_lp_normalization(p: int, axis: int) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 2)).astype(np.float32)
    compare(model("LpNormalization", {"x": x}, P.FLOAT, 13, p=p, axis=axis), {"x": x})
