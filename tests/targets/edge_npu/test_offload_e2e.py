"""PP-OCR cls (QDQ int8) end to end: CPU parts on TVM's VM, the NPU segment on the
simulator through the registered packed function; against the integer reference
(bit-exact) and ONNX Runtime running the same QDQ model (within one step)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgec.examples.images import text_line_images
from edgec.targets.edge_npu import int_reference
from edgec.targets.edge_npu.int_reference import run_layer, to_hwc
from edgec.targets.edge_npu.report import to_text
from edgec.targets.edge_npu.runtime import NpuExecutor
from edgec.targets.edge_npu.target import npu_target

from .ort_oracle import quantized_tensors
from .qdq_fixture import cls_offload, ppocr_cls_qdq


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qdq"))


@pytest.fixture(scope="module")
def executor(workdir, tmp_path_factory):
    import tvm

    off = cls_offload(workdir, "edge-npu")
    desc = npu_target("edge-npu")
    lib = tmp_path_factory.mktemp("lib") / "model.so"
    tvm.compile(off.mod, target=desc.tvm_target()).export_library(str(lib))
    return off, NpuExecutor(lib.read_bytes(), off.files, desc.to_json())


def test_whole_model_runs_and_npu_is_bit_exact(workdir, executor):
    """Through the VM: each call of the NPU segment equals the integer path on the very
    input the VM passed, the class agrees with ONNX Runtime (its default graph
    optimizations, i.e. the fused QLinear kernels) on every image and each softmax
    element is within one output step (1/255) of ORT's.

    Measured (binary32 requantization, 4 images): at most 0.99998 steps; with gemmlowp
    rounding one-step differences in 0.2-3 % of a layer's elements compounded to up to
    10 logit steps. The per-layer test below holds each layer to one step."""
    off, exe = executor
    sess = ort.InferenceSession(str(ppocr_cls_qdq(workdir)), providers=["CPUExecutionProvider"])
    images, _ = text_line_images(4, seed=11)
    seg = off.partition.segments[0]
    for i in range(len(images)):
        x = images[i:i + 1]
        y = exe.run([x])[0]
        ins = exe.device.last_inputs[0]
        npu = exe.device.run_segment(0, ins)[0]
        assert np.array_equal(npu, int_reference.run_segment(seg, ins)[0])
        ref = sess.run(None, {"x": x})[0]
        assert y.shape == ref.shape and np.argmax(y) == np.argmax(ref)
        assert np.abs(y - ref).max() <= 1 / 255 + 1e-6
        assert np.isclose(y.sum(), 1.0, atol=0.02)


def test_each_layer_within_one_step_of_ort(workdir, executor):
    """Teacher-forced: every NPU layer, fed ORT's int8 inputs, gives ORT's int8 output
    to within one quantization step for all elements, the vector unit's layers (LUT,
    ADD, MUL, pools) exactly, and >= 99.999 % of all elements exactly.

    Measured (binary32, 2 images, 4.25 M elements): 3 conv outputs differ by one step
    (ORT without graph optimizations runs the conv in float), everything else is equal;
    with gemmlowp rounding 0.2-3.3 % of conv / mul / pool elements differed."""
    off, _ = executor
    sess, names = quantized_tensors(onnx.load(ppocr_cls_qdq(workdir)))
    seg = off.partition.segments[0]
    images, _ = text_line_images(2, seed=5)
    total = exact = 0
    for i in range(len(images)):
        outs = sess.run(names, {"x": images[i:i + 1]})
        values = {seg.inputs[0]: to_hwc(outs[0])}  # outs[0]: the model input's quantize
        for k, sl in enumerate(seg.layers):
            ort_out = to_hwc(outs[1 + k])  # layers follow the graph's QuantizeLinear order
            got = run_layer(sl.layer, [values[v] for v in sl.inputs])
            assert got.shape == ort_out.shape, sl.name
            d = np.abs(got.astype(np.int64) - ort_out.astype(np.int64))
            assert d.max() <= 1, (sl.name, sl.layer.kind, int(d.max()))
            total, exact = total + d.size, exact + int((d == 0).sum())
            values[sl.output] = ort_out
            if sl.layer.kind != "conv":  # the vector unit's layers: exact
                assert d.max() == 0, (sl.name, sl.layer.kind)
    assert exact / total >= 0.99999


def test_report(executor):
    off, _ = executor
    rep = off.report
    assert rep["macs"]["npu_fraction"] >= 0.95
    assert rep["memory"]["streamed_weight_bytes"] == 0
    assert rep["per_inference"]["cycles"] > 0 and rep["per_inference"]["energy_mj"] > 0
    assert all(c["reason"] for c in rep["ops"]["cpu"])
    text = to_text(rep, max_layers=len(rep["layers"]))
    assert "MACs on NPU" in text and "softmax" in text
    # cls is small: every layer waits on its loads or stores, and the line says so
    assert rep["per_inference"]["compute_layers"] == 0
    assert "no layer is compute-bound" in text and "ceiling 0.0%" not in text
    # what fused into a layer shows in its kind: cls's SE scale and residual adds
    kinds = {line.split()[1] for line in text.splitlines() if line.startswith("    npu")}
    assert {"mul+conv", "conv+add"} <= kinds


def test_report_names_the_cascades(executor):
    """cls's cascades: each in the text with its layers and cycles together, below the
    sum of its layers' cycles alone (the table's), and the segment's cycles equal the
    layers' alone minus what the cascades saved."""
    off, _ = executor
    rep = off.report
    groups = {}
    for ly in rep["layers"]:
        if "cascade" in ly:
            groups.setdefault(ly["cascade"]["name"], [ly["cascade"], 0])[1] += ly["cycles"]
    assert groups
    text = to_text(rep)
    for name, (c, alone) in groups.items():
        assert c["alone_cycles"] == alone and c["cycles"] < alone
        assert f"{name}: " in text and f"{c['cycles']:,} cycles" in text
    # cls's image comes in over the host queue, and the report says so
    linked = [c for c, _ in groups.values() if c.get("host_queue")]
    assert [c["host_queue"] for c in linked] == [["in"]]
    assert f"{linked[0]['name']}: " in text and "its host input over the host queue" in text
    saved = sum(alone - c["cycles"] for c, alone in groups.values())
    assert rep["per_inference"]["cycles"] == sum(ly["cycles"] for ly in rep["layers"]) - saved
