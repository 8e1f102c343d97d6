"""Small helpers shared by edgec's converters: dtypes and constant inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm.relax.frontend.onnx.onnx_frontend import get_constant


def dtype_of(expr: Any) -> str | None:
    """An expression's tensor dtype (TVM 0.27 names the type ``ty``), or None."""
    for field in ("ty", "struct_info"):
        dtype = getattr(getattr(expr, field, None), "dtype", None)
        if dtype:
            return str(dtype)
    return None


def constant_value(expr: Any, params: Any, what: str) -> np.ndarray:
    """The NumPy value of a constant input, or ValueError naming ``what``."""
    value = get_constant(expr, params)
    if not isinstance(value, tvm.ir.GenericConst):
        raise ValueError(  # noqa: TRY004  TVM's importer reports converter ValueErrors per node
            f"{what} must be a constant (edgec specialises on its value)")
    return np.asarray(value.value.numpy())
