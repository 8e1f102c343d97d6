"""edgec's ONNX converters for operators TVM's Relax importer lacks (LSTM, GRU, ...).

This is the single adapter point between edgec and ``tvm.relax.frontend.onnx``:

- ``CONVERTERS``: op_type -> ``OnnxOpConverter`` subclass (ours; an entry with the same
  op_type as one of TVM's overrides TVM's converter).
- ``installed()``: context manager under which ``from_onnx`` sees TVM's map plus ours.
- ``supported_ops()``: every op type the importer can handle with ours installed.

Why patching: TVM 0.27's importer has no registration hook. ``ONNXGraphImporter`` calls
the module-level function ``onnx_frontend._get_convert_map()`` both in
``_check_for_unsupported_ops`` and in ``_convert_operator``, so replacing that function
for the duration of an import is the only way to add converters without forking the
importer. Not thread-safe (module global); nested use restores correctly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from edgec.converters.constant import Constant
from edgec.converters.cumprod import CumProd
from edgec.converters.elementwise import Cosh, Elu, IsInf, Selu, Sinh
from edgec.converters.gru import GRU
from edgec.converters.lp_normalization import LpNormalization
from edgec.converters.lstm import LSTM
from edgec.converters.onehot import OneHot
from edgec.converters.pow import Pow
from edgec.converters.rnn import RNN
from tvm.relax.frontend.onnx import onnx_frontend

CONVERTERS: dict[str, type] = {
    "LSTM": LSTM,
    "GRU": GRU,
    "Pow": Pow,
    "Constant": Constant,
    "CumProd": CumProd,
    "Sinh": Sinh,
    "Cosh": Cosh,
    "IsInf": IsInf,
    "Elu": Elu,
    "Selu": Selu,
    "LpNormalization": LpNormalization,
    "OneHot": OneHot,
    "RNN": RNN,
}

# Ops the importer handles itself, outside the converter map.
_DIRECTLY_HANDLED = {"Constant", "If"}


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Make ``tvm.relax.frontend.onnx.from_onnx`` use TVM's converters plus ours."""
    previous = onnx_frontend._get_convert_map

    def convert_map() -> dict[str, type]:
        # Built on each call like TVM's own; ours win on a name clash.
        return {**previous(), **CONVERTERS}

    onnx_frontend._get_convert_map = convert_map
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = previous


def supported_ops() -> set[str]:
    """Op types ``from_onnx`` can import while ``installed()`` is active."""
    return set(onnx_frontend._get_convert_map()) | set(CONVERTERS) | _DIRECTLY_HANDLED


__all__ = ["CONVERTERS", "installed", "supported_ops"]
