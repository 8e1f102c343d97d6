"""``edgec build --target edge-npu --quantize int8`` end to end, as a user runs it.

edgec's own PTQ writes the QDQ model (``style="npu"``: element-wise ops, pools and
reshapes between the convs are quantized too), the driver keeps the QDQ form and
offloads it; then ``edgec run`` and ``edgec bench --json`` on the package. Checked:

- the placement report: PP-OCR cls is one NPU segment with >= 95 % of the MACs;
- the NPU segment's output, on the very inputs the VM passed it, is bit-exact against
  the integer reference path (``int_reference``) of the same partition;
- ``edgec run`` (a subprocess) and the in-process executor give identical outputs;
- the class (top-1) equals the float model's on rendered text lines;
- against ONNX Runtime (default graph optimizations) on the same QDQ model: every
  softmax element within half an output step (1/255), the int8 logits within one step;
- ``edgec bench --json`` reports the simulator's figures (cycles, latency, energy),
  equal to the build's placement report.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from edgec.examples.data import text_line_images
from edgec.examples.models import model_path
from edgec.runtime import load
from edgec.targets.edge_npu import int_reference
from edgec.targets.edge_npu.bundle import model_key

from tests.conftest import run_cli

SHAPE = "x=1x3x48x192"
LINES = 4  # rendered lines checked against the float model (seed 11)


def _ort_with_logits(model):
    """ORT session on the QDQ model, also returning the int8 tensor softmax dequantizes."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    made = {o: n for n in model.graph.node for o in n.output}
    node = made[next(n for n in model.graph.node if n.op_type == "Softmax").input[0]]
    while node.op_type != "DequantizeLinear":
        node = made[node.input[0]]
    model.graph.output.append(onnx.helper.make_tensor_value_info(
        node.input[0], onnx.TensorProto.INT8, None))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("npu_cli")
    calib, _ = text_line_images(24, seed=3)
    np.savez(tmp / "calib.npz", x=calib)
    pkg = tmp / "cls.edgec"
    proc = run_cli("build", str(model_path("ppocr-cls")), "--input-shape", SHAPE,
                   "--target", "edge-npu", "--quantize", "int8", "--calib",
                   str(tmp / "calib.npz"), "-o", str(pkg), "--json")
    assert proc.returncode == 0, proc.stderr
    return tmp, pkg, json.loads(proc.stdout)


def test_placement_report(built):
    _, _, out = built
    rep = out["report"]["npu"]
    assert rep["macs"]["npu_fraction"] >= 0.95
    assert len(rep["segments"]) == 1  # one NPU segment: quantize in, softmax out on the CPU
    assert rep["per_inference"]["cycles"] > 0 and rep["per_inference"]["energy_mj"] > 0
    assert all(c["reason"] for c in rep["ops"]["cpu"])
    assert {c["op"] for c in rep["ops"]["cpu"]} <= {"relax.quantize", "relax.dequantize",
                                                   "relax.nn.softmax"}
    assert out["report"]["quantization"]["style"] == "npu"


def test_run_bit_exact_and_top1(built):
    """The CLI's output equals the in-process executor's; each NPU call equals the integer
    reference on the VM's own inputs; top-1 equals the float model's."""
    from edgec.driver import import_model
    from edgec.targets import get_target
    from edgec.targets.edge_npu.offload import offload

    tmp, pkg_path, _ = built
    images, _ = text_line_images(LINES, seed=11)
    np.savez(tmp / "line.npz", x=images[:1])
    proc = run_cli("run", str(pkg_path), "--inputs", str(tmp / "line.npz"),
                   "--output-dir", str(tmp / "out"))
    assert proc.returncode == 0, proc.stderr
    cli_out = [np.load(f) for f in sorted((tmp / "out").glob("*.npy"))]
    assert len(cli_out) == 1

    # the same import + partition in process (quantization is deterministic): the same
    # NPU program as the package's, and the layers the integer reference runs
    imp = import_model(model_path("ppocr-cls"), get_target("edge-npu"),
                       input_shapes={"x": (1, 3, 48, 192)}, quantize="int8",
                       calib=str(tmp / "calib.npz"))
    off = offload(imp.mod, "edge-npu")
    pkg = load(pkg_path)
    exe = pkg.executor()
    assert model_key(off.model) == exe.key
    seg = off.partition.segments[0]

    sess = ort.InferenceSession(str(model_path("ppocr-cls")), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    qdq = _ort_with_logits(imp.simple)
    for i in range(LINES):
        x = images[i:i + 1]
        y = exe.run([x])[0]
        if i == 0:
            assert np.array_equal(y, cli_out[0])
        ins = exe.device.last_inputs[0]
        logits = exe.device.run_segment(0, ins)[0]
        assert np.array_equal(logits, int_reference.run_segment(seg, ins)[0])
        # binary32 requantization, measured over 48 lines: softmax at most 0.31 steps
        # off, logits 97.9 % within one step (max 2; these 4 lines: equal); gemmlowp
        # rounding: 17 and 5 steps
        ort_y, ort_logits = qdq.run(None, {name: x})
        assert np.abs(y - ort_y).max() <= 0.5 / 255
        assert np.abs(logits.astype(int) - ort_logits.reshape(logits.shape)).max() <= 1
        ref = sess.run(None, {name: x})[0]
        assert y.shape == ref.shape
        assert np.argmax(y) == np.argmax(ref), (i, y, ref)
        assert np.isclose(y.sum(), 1.0, atol=0.02)


def test_bench_reports_simulated_figures(built):
    tmp, pkg_path, out = built
    images, _ = text_line_images(1, seed=11)
    np.savez(tmp / "bench.npz", x=images)
    proc = run_cli("bench", str(pkg_path), "--inputs", str(tmp / "bench.npz"),
                   "--repeat", "1", "--warmup", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    e = json.loads(proc.stdout)["edgec"]
    inf = out["report"]["npu"]["per_inference"]
    assert e["npu_calls"] == 1
    assert e["npu_cycles"] == inf["cycles"]  # data does not change timing
    assert e["npu_ms"] == pytest.approx(inf["ms"])
    assert e["npu_energy_mj"] == pytest.approx(inf["energy_mj"])
    assert e["npu_utilization"] == pytest.approx(inf["utilization"])
    assert 0 < e["npu_utilization"] < 1 and e["median_ms"] > 0


def test_float_model_gets_a_quantize_hint(tmp_path):
    """A float model builds for edge-npu with everything on the CPU, and says why and what to do."""
    from tests.conftest import make_mlp

    proc = run_cli("build", str(make_mlp(tmp_path / "mlp.onnx")), "--target", "edge-npu",
                   "-o", str(tmp_path / "mlp.edgec"))
    assert proc.returncode == 0, proc.stderr
    assert "MACs on NPU: 0 of" in proc.stdout
    assert "hint: the NPU runs int8 layers only; build with --quantize int8" in proc.stdout
    # CPU ops grouped by op and reason; no empty NPU tables
    assert "2 matmul" in proc.stdout and "(lv, lv3)" in proc.stdout
    assert "no NPU work" in proc.stdout and "slowest" not in proc.stdout
