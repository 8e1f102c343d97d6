"""ONNX Runtime as the oracle for QDQ models: every int8 activation of a QDQ graph, and
an NPU segment compared with ORT on ORT's own quantized input."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from edgec.targets.edge_npu import int_reference
from edgec.targets.edge_npu.int_reference import to_hwc
from edgec.targets.edge_npu.runtime import NpuDevice


def quantized_tensors(model: onnx.ModelProto) -> tuple[ort.InferenceSession, list[str]]:
    """ORT (no graph optimizations: the QDQ graph's own float semantics) on a copy of
    ``model`` returning every int8 activation, i.e. each QuantizeLinear output of a
    non-constant, in graph order."""
    model = onnx.load_from_string(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    names = [n.output[0] for n in model.graph.node
             if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.INT8, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]), names


def segment_diffs(qdq: onnx.ModelProto, off, shape: tuple[int, ...], runs: int = 4,
                  seed: int = 7) -> np.ndarray:
    """|NPU - ORT| over the int8 output of ``off``'s only segment, fed ORT's quantized
    model input (``runs`` random normal inputs of ``shape``); asserts on the way that the
    NPU is bit-exact with the integer reference."""
    sess, names = quantized_tensors(qdq)
    device = NpuDevice(off.model)
    seg = off.partition.segments[0]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(runs):
        x = rng.normal(0, 1, shape).astype(np.float32)
        q_in, q_out = sess.run([names[0], names[-1]], {"x": x})
        npu = device.run_segment(0, [q_in])[0]
        assert npu.shape == q_out.shape
        assert np.array_equal(npu, int_reference.run_segment(seg, [q_in])[0])
        diffs.append(np.abs(to_hwc(npu).astype(int) - to_hwc(q_out).astype(int)).reshape(-1))
    return np.concatenate(diffs)


def ort_qdq(model: onnx.ModelProto, shape: tuple[int, ...], folder) -> onnx.ModelProto:
    """``model`` quantized by ONNX Runtime's ``quantize_static`` (QDQ, int8 activations
    and per-channel weights), calibrated on 8 normal inputs of ``shape`` for its input
    "x" (seed 0); files go to ``folder``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(0)
    onnx.save(model, folder / "f32.onnx")
    data = [{"x": rng.normal(0, 1, shape).astype(np.float32)} for _ in range(8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(folder / "f32.onnx"), str(folder / "qdq.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return onnx.load(folder / "qdq.onnx")
