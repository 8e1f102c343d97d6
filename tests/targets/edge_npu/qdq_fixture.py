"""A QDQ int8 PP-OCR classifier made with ONNX Runtime's ``quantize_static``.

Stand-in until edgec's own quantization pass exports QDQ: per-channel symmetric int8
weights, int8 activations, calibrated on rendered text lines. The float model is
shape-fixed, simplified (``edgec.frontend``), moved to opset 13 (per-axis
DequantizeLinear needs it) and BatchNorm-folded (``quant_pre_process``) first.
Cached per process under the given directory.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

CLS_SHAPE = (1, 3, 48, 192)


@functools.lru_cache(maxsize=4)
def ppocr_cls_qdq(workdir: str, calib: int = 16) -> Path:
    import onnx
    from edgec import frontend
    from edgec.examples.images import text_line_images
    from edgec.examples.models import model_path
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = frontend.load_model(model_path("ppocr-cls"))
    simple = frontend.simplify(frontend.fix_input_shapes(loaded.proto, {"x": CLS_SHAPE}))
    simple = onnx.version_converter.convert_version(simple, 13)
    onnx.save(simple, out / "cls_f32.onnx")
    quant_pre_process(str(out / "cls_f32.onnx"), str(out / "cls_pre.onnx"),
                      skip_symbolic_shape=True)
    images, _ = text_line_images(calib, seed=1)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": images[i:i + 1]} for i in range(len(images))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    path = out / "cls_qdq.onnx"
    quantize_static(str(out / "cls_pre.onnx"), str(path), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return path


@functools.lru_cache(maxsize=1)
def cls_relax(workdir: str):  # type: ignore[no-untyped-def]
    """The QDQ classifier imported into Relax (cached)."""
    import onnx
    from edgec import frontend

    return frontend.to_relax(onnx.load(ppocr_cls_qdq(workdir)))


@functools.lru_cache(maxsize=4)
def cls_offload(workdir: str, config: str):  # type: ignore[no-untyped-def]
    """``offload`` of the QDQ classifier for one config (cached)."""
    from edgec.targets.edge_npu.offload import offload

    return offload(cls_relax(workdir), config)
