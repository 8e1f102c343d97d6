"""PP-OCRv4 det (1x3x320x320, edgec's own int8 PTQ) on edge-npu end to end: one NPU
segment with every MAC (the FPN's resizes, concat and 6400-pixel global pools, and the
head's two transposed convs with their bias, BN and ReLU folded in), only the final
Sigmoid on the CPU. Oracles: edgec's integer reference (bit-exact) and ONNX
Runtime on the same QDQ export (per layer, and on the final probability map)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from edgec.targets.edge_npu import int_reference
from edgec.targets.edge_npu.int_reference import run_layer, to_hwc

from .conftest import assert_segments_bit_exact
from .ort_oracle import quantized_tensors

pytestmark = pytest.mark.slow

SIZE = 320


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    import tvm
    from edgec.driver import import_model
    from edgec.examples.images import text_page_images
    from edgec.examples.models import model_path
    from edgec.targets.edge_npu.offload import offload
    from edgec.targets.edge_npu.runtime import NpuExecutor
    from edgec.targets.edge_npu.target import npu_target

    d = tmp_path_factory.mktemp("det")
    calib, _ = text_page_images(4, SIZE, SIZE, seed=3)
    np.savez(d / "calib.npz", x=calib)
    desc = npu_target("edge-npu")
    imp = import_model(model_path("ppocr-det"), desc, input_shapes={"x": (1, 3, SIZE, SIZE)},
                       quantize="int8", calib=str(d / "calib.npz"))
    off = offload(imp.mod, "edge-npu")
    lib = d / "model.so"
    tvm.compile(off.mod, target=desc.tvm_target()).export_library(str(lib))
    return imp, off, NpuExecutor(lib.read_bytes(), off.files, desc.to_json())


def _closeness(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(share of map pixels within 1/255 of ``ref``, share of equal 0.3 text-mask pixels)."""
    return (np.abs(a - ref) <= 1 / 255 + 1e-6).mean(), ((a > 0.3) == (ref > 0.3)).mean()


def test_one_segment_bit_exact_and_the_map_agrees_with_ort(det):
    """Against ORT with its default graph optimizations (the fused QLinear kernels), the
    probability map is as close as ORT without graph optimizations (the QDQ graph's float
    semantics) is to the same ORT: no implementation can do better than ORT's two modes
    agree with each other.

    Why det cannot meet "within one step for 99.9 %": single layers differ from ORT in a
    few near-ties per page (13 of 5.65 M conv elements, next test; ORT runs 14 of det's
    62 convs in float, unfused, and its fused kernels' multipliers differ by an ulp or
    two on some channels), and det's LUT layers are steep enough that a one-step input
    difference becomes up to 16 steps, so over 100 layers the differences spread. Measured on 2 pages: NPU vs ORT 99.26-99.82 % of map pixels within 1/255 and
    the 0.3 text mask equal on 99.953-99.984 %; ORT's two modes 97.7-99.2 % and
    99.83-99.92 %."""
    from edgec.examples.images import text_page_images

    imp, off, exe = det
    assert len(off.partition.segments) == 1
    cpu_ops = {c["op"] for c in off.report["ops"]["cpu"]}
    assert not cpu_ops & {"relax.image.resize2d", "relax.concat", "relax.mean",
                          "relax.nn.conv2d_transpose"}
    assert off.report["macs"]["npu_fraction"] == 1.0
    sess = ort.InferenceSession(imp.simple.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = ort.InferenceSession(imp.simple.SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    pages, _ = text_page_images(2, SIZE, SIZE, seed=11)
    seg = off.partition.segments[0]
    for i in range(len(pages)):
        x = pages[i:i + 1]
        y = exe.run([x])[0]
        ins = exe.device.last_inputs[0]
        npu = exe.device.run_segment(0, ins)
        assert all(np.array_equal(a, b) for a, b in zip(npu, int_reference.run_segment(seg, ins)))
        ref = sess.run(None, {"x": x})[0]
        alt = unfused.run(None, {"x": x})[0]
        assert y.shape == ref.shape
        (npu_map, npu_mask), (ort_map, ort_mask) = _closeness(y, ref), _closeness(alt, ref)
        print(f"page {i}: map within 1/255 npu {npu_map:.4f} ort-unfused {ort_map:.4f}; "
              f"mask npu {npu_mask:.5f} ort-unfused {ort_mask:.5f}")
        assert npu_map >= min(ort_map, 0.999) - 0.005 and npu_map >= 0.98
        assert npu_mask >= min(ort_mask, 0.9999) - 0.001 and npu_mask >= 0.995


def test_each_layer_within_one_step_of_ort(det):
    """Teacher-forced: each NPU layer, fed ONNX Runtime's int8 inputs (graph
    optimizations off: the QDQ graph's float semantics), is within one step of ORT's
    int8 output for every element; the vector unit's layers (LUT, MUL, global pool,
    resize, concat) are exact. Layers follow the graph's QuantizeLinear outputs in order
    (each matched to the next tensors of its shape).

    Measured (1 page, 25 M elements): conv and add outputs differ by at most one step,
    every other kind is equal."""
    from edgec.examples.images import text_page_images

    imp, off, _ = det
    sess, names = quantized_tensors(imp.simple)
    page, _ = text_page_images(1, SIZE, SIZE, seed=11)
    ort_vals = [to_hwc(v) for v in sess.run(names, {"x": page})]
    seg = off.partition.segments[0]
    values = {seg.inputs[0]: ort_vals[0]}
    nxt, kinds, transposed = 1, set(), 0
    for sl in seg.layers:
        got = run_layer(sl.layer, [values[v] for v in sl.inputs])
        cands = [j for j in range(nxt, min(nxt + 6, len(names)))
                 if ort_vals[j].shape == got.shape]
        assert cands, sl.name
        j = min(cands, key=lambda j: np.abs(ort_vals[j].astype(int) - got.astype(int)).mean())
        d = np.abs(ort_vals[j].astype(int) - got.astype(int))
        assert d.max() <= (1 if sl.layer.kind in ("conv", "add") else 0), (sl.name, d.max())
        values[sl.output], nxt = ort_vals[j], j + 1
        kinds.add(sl.layer.kind)
        transposed += sl.layer.kind == "conv" and sl.layer.attrs["conv"].phases > 1
    assert {"resize", "concat", "gap", "conv", "lut"} <= kinds and transposed == 2


def test_small_npu_keeps_most_macs_bit_exact(det):
    """On edge-npu-s (16x16, 512 KiB) det's activations and weights overflow the cache:
    the fallback leaves the global pools whose inputs cannot stay on chip and the convs
    whose weights leave no scratch, in few re-partitions, and keeps most MACs on the
    NPU. Every segment is bit-exact."""
    from edgec.targets.edge_npu.config import load_config
    from edgec.targets.edge_npu.offload import offload

    imp, _, _ = det
    cfg = load_config("edge-npu-s")
    off = offload(imp.mod, cfg)
    assert off.report["macs"]["npu_fraction"] > 0.8
    means = [c for c in off.report["ops"]["cpu"] if c["op"] == "relax.mean"]
    assert means and all("could not be placed" in c["reason"] for c in means)
    assert_segments_bit_exact(off.model, off.partition.segments, cfg, seed=1)
