"""Sinh, Cosh, IsInf (sign filters), Elu/Selu in float16 against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as P

from tests.compiler.converters._one_node import compare, model

X = np.linspace(-3, 3, 13, dtype=np.float32)


@pytest.mark.parametrize("op", ["Sinh", "Cosh"])
def test_hyperbolic(op: str) -> None:
    compare(model(op, {"x": X}, P.FLOAT, 13), {"x": X})


@pytest.mark.parametrize("pos,neg", [(1, 0), (0, 1), (1, 1)])
def test_isinf_sign_filters(pos: int, neg: int) -> None:
    x = np.array([-np.inf, -1.0, 0.0, np.nan, 2.0, np.inf], np.float32)
    m = model("IsInf", {"x": x}, P.BOOL, 20, detect_positive=pos, detect_negative=neg)
    compare(m, {"x": x})


@pytest.mark.parametrize("op,attrs", [("Elu", {"alpha": 0.7}), ("Selu", {})])
def test_exponential_units_keep_float16(op: str, attrs: dict) -> None:
    x = X.astype(np.float16)
    compare(model(op, {"x": x}, P.FLOAT16, 13, **attrs), {"x": x}, rtol=2e-3, atol=2e-3)
