"""PP-OCRv4 rec (1x3x48x320, edgec's int8 PTQ) on edge-npu: a conv + transformer hybrid.
Its convs and the SVTR mixer's weight matmuls go to the NPU; layer norm, softmax, the
attention's activation x activation matmuls and the transposes around them stay on the
CPU, so it runs as several segments. Oracles: edgec's integer reference (bit-exact, each
segment on the VM's own inputs) and the text itself (character error rate of greedy CTC
decoding, against ONNX Runtime on the float model)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from edgec.targets.edge_npu import int_reference

pytestmark = pytest.mark.slow

SHAPE = (1, 3, 48, 320)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    import tvm
    from edgec.driver import import_model
    from edgec.examples.images import upright_text_lines
    from edgec.examples.models import model_path
    from edgec.targets.edge_npu.offload import offload
    from edgec.targets.edge_npu.runtime import NpuExecutor
    from edgec.targets.edge_npu.target import npu_target

    d = tmp_path_factory.mktemp("rec")
    np.savez(d / "calib.npz", x=upright_text_lines(16, seed=3)[0])
    desc = npu_target("edge-npu")
    imp = import_model(model_path("ppocr-rec"), desc, input_shapes={"x": SHAPE},
                       quantize="int8", calib=str(d / "calib.npz"))
    off = offload(imp.mod, "edge-npu")
    lib = d / "model.so"
    tvm.compile(off.mod, target=desc.tvm_target()).export_library(str(lib))
    return off, NpuExecutor(lib.read_bytes(), off.files, desc.to_json())


def test_rec_on_the_npu_reads_as_well_as_float(rec):
    """Most MACs on the NPU in several segments, each bit-exact; on 16 rendered lines the
    int8 model's character error rate is within two points of the float model's under
    ONNX Runtime (measured: 99.2 % of MACs in 12 segments; CER 0.112 float, 0.078 int8
    on these lines, and 0.074 / 0.076 on 32)."""
    from edgec.examples.images import upright_text_lines
    from edgec.examples.models import model_path
    from edgec.examples.ocr import ctc_greedy, edit_distance, rec_charset

    off, exe = rec
    assert off.report["macs"]["npu_fraction"] >= 0.95
    assert len(off.partition.segments) > 1
    cpu_ops = {c["op"] for c in off.report["ops"]["cpu"]}
    assert {"relax.nn.layer_norm", "relax.nn.softmax"} <= cpu_ops
    path = model_path("ppocr-rec")
    chars = rec_charset(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lines, texts = upright_text_lines(16, seed=99)
    float_err = npu_err = total = 0
    for i, text in enumerate(texts):
        got = exe.run([lines[i:i + 1]])[0][0]
        if i == 0:
            for k, seg in enumerate(off.partition.segments):
                ins = exe.device.last_inputs[k]
                assert all(np.array_equal(a, b) for a, b in zip(
                    exe.device.run_segment(k, ins), int_reference.run_segment(seg, ins))), k
        want = sess.run(None, {"x": lines[i:i + 1]})[0][0]
        float_err += edit_distance(ctc_greedy(want, chars), text)
        npu_err += edit_distance(ctc_greedy(got, chars), text)
        total += len(text)
    print(f"CER on 16 lines: float {float_err / total:.4f}, npu {npu_err / total:.4f}")
    assert npu_err / total <= float_err / total + 0.02
