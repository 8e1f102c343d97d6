"""Constant with ``value_int(s)``/``value_float(s)`` attributes (TVM reads only ``value``).

ONNX lets a Constant carry its value in one of several attributes; TVM's converter
raises "no value in Constant" for all but ``value``. onnxscript's optimizer emits
``value_ints`` when it folds a Shape, so these appear in optimized graphs:

    Constant(value_ints=[3, 4]) -> const([3, 4], int64)
    Constant(value_float=0.5)   -> const(0.5, float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import Constant as _TvmConstant

_SCALAR_ATTRS = {"value_int": np.int64, "value_float": np.float32}
_LIST_ATTRS = {"value_ints": np.int64, "value_floats": np.float32}


class Constant(_TvmConstant):
    """TVM's Constant, plus the scalar and list value attributes."""

    @classmethod
    def _impl_v13(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        for name, dtype in {**_SCALAR_ATTRS, **_LIST_ATTRS}.items():
            if name in attr:
                value = np.asarray(attr[name], dtype=dtype)
                if name in _LIST_ATTRS:
                    value = value.reshape(-1)
                return relax.const(value, value.dtype.name)
        return super()._impl_v13(bb, inputs, attr, params)
