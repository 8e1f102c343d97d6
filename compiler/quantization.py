"""int8 post-training quantization of an ONNX model, as the build and `edgec quantize` use it.

Calibrate on samples, write QDQ ONNX (the one place the quantization parameters
live), and report accuracy on the held-out samples.
"""

from __future__ import annotations

import os
from typing import Any

import onnx
from edgec.errors import InputError
from edgec.passes.quantize.observers import DEFAULT_METHOD, METHODS

__all__ = ["DEFAULT_METHOD", "METHODS", "quantize_for_build", "quantize_proto"]


def quantize_proto(simple: onnx.ModelProto, calib_path: str | os.PathLike[str],
                   method: str = DEFAULT_METHOD, budget: str | None = None,
                   held_out_every: int = 5, style: str = "anchors") -> Any:
    """Quantize a simplified static model with samples from ``calib_path``."""
    from edgec import calibration, frontend
    from edgec.passes.quantize.accuracy import parse_budget
    from edgec.passes.quantize.ptq import quantize_onnx

    parsed = parse_budget(budget) if budget else None  # a typo fails before any work
    data = calibration.load(calib_path, frontend.graph_inputs(simple), held_out_every)
    result = quantize_onnx(simple, data.calib, data.held_out, method, parsed, style=style)
    result.report["samples"]["source"] = data.source
    return result


def quantize_for_build(simple: onnx.ModelProto, quantize: str | None,
                       calib: str | os.PathLike[str] | None, method: str = DEFAULT_METHOD,
                       budget: str | None = None, held_out_every: int = 5,
                       style: str = "anchors") -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The driver's hook: the QDQ model to import, and the quantization report.

    ``style="npu"`` (targets that offload QDQ groups, e.g. edge-npu) also quantizes the
    element-wise ops, pools and reshapes between conv / matmul layers."""
    if quantize != "int8":
        raise InputError(f"--quantize {quantize!r}: only int8 is supported")
    if calib is None:
        raise InputError("--quantize int8 needs --calib DIR (calibration samples)")
    result = quantize_proto(simple, calib, method, budget, held_out_every, style)
    report = {k: v for k, v in result.report.items() if k != "params"}
    return result.model, report


