"""Elementwise ops where TVM's converter is wrong for some inputs.

- Sinh, Cosh: TVM emits ``tirx.sinh``/``tirx.cosh``, which LLVM cannot lower on the
  host ("unknown intrinsic"). ``sinh(x) = (e^x - e^-x) / 2``, ``cosh(x) = (e^x + e^-x) / 2``.
- IsInf: TVM ignores ``detect_positive``/``detect_negative``.
  ``isinf(x) and (x > 0 if detect_positive) or (x < 0 if detect_negative)``.
- Elu, Selu: TVM builds float32 constants, so float16/bfloat16 inputs (and Celu, whose
  ONNX function body is an Elu) fail with mixed dtypes. Same formulas in the input's dtype:
  ``elu(x) = relu(x) - alpha * relu(1 - e^x)``, ``selu(x) = gamma * elu_alpha(x)``.
"""

from __future__ import annotations

from typing import Any

from edgec.converters._util import dtype_of
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import Cosh as _TvmCosh
from tvm.relax.frontend.onnx.onnx_frontend import Elu as _TvmElu
from tvm.relax.frontend.onnx.onnx_frontend import IsInf as _TvmIsInf
from tvm.relax.frontend.onnx.onnx_frontend import Selu as _TvmSelu
from tvm.relax.frontend.onnx.onnx_frontend import Sinh as _TvmSinh

op = relax.op


def _const(value: float, like: Any) -> Any:
    return relax.const(value, dtype_of(like) or "float32")


def _exp_pair(x: Any) -> tuple[Any, Any]:
    return op.exp(x), op.exp(op.negative(x))


class Sinh(_TvmSinh):
    """sinh through exp."""

    @classmethod
    def _impl_v9(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        pos, neg = _exp_pair(inputs[0])
        return op.multiply(op.subtract(pos, neg), _const(0.5, inputs[0]))


class Cosh(_TvmCosh):
    """cosh through exp."""

    @classmethod
    def _impl_v9(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        pos, neg = _exp_pair(inputs[0])
        return op.multiply(op.add(pos, neg), _const(0.5, inputs[0]))


class IsInf(_TvmIsInf):
    """isinf with the sign filters."""

    @classmethod
    def _impl_v10(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        x = inputs[0]
        pos, negative = int(attr.get("detect_positive", 1)), int(attr.get("detect_negative", 1))
        inf = op.isinf(x)
        if pos and negative:
            return inf
        if not pos and not negative:
            return op.logical_and(inf, op.not_equal(x, x))  # all false, right shape
        side = op.greater(x, _const(0.0, x)) if pos else op.less(x, _const(0.0, x))
        return op.logical_and(inf, side)


def _elu(x: Any, alpha: float) -> Any:
    one_minus_exp = op.subtract(_const(1.0, x), op.exp(x))
    return op.subtract(op.nn.relu(x), op.multiply(_const(alpha, x), op.nn.relu(one_minus_exp)))


class Elu(_TvmElu):
    """Elu in the input's dtype."""

    @classmethod
    def _impl_v1(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        return _elu(inputs[0], float(attr.get("alpha", 1.0)))


class Selu(_TvmSelu):
    """Selu in the input's dtype."""

    @classmethod
    def _impl_v1(cls, bb: Any, inputs: list[Any], attr: dict[str, Any], params: Any) -> Any:
        alpha = float(attr.get("alpha", 1.67326319217681884765625))
        gamma = float(attr.get("gamma", 1.05070102214813232421875))
        return op.multiply(_const(gamma, inputs[0]), _elu(inputs[0], alpha))
