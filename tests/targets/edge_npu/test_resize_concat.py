"""Nearest resize and channel concat on the NPU, against ONNX Runtime on the same QDQ
model (ORT's ``quantize_static``): an FPN-like block, two conv branches, one upsampled
x2, concatenated and mixed by a 1x1 conv, as PP-OCR det's neck does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from edgec import frontend
from edgec.targets.edge_npu.offload import offload
from edgec.targets.edge_npu.report import to_text
from onnx import TensorProto, helper, numpy_helper

from .ort_oracle import ort_qdq, segment_diffs


def _weights(rng: np.random.Generator, **shapes: tuple[int, ...]) -> list[onnx.TensorProto]:
    """Normal(0, 0.3) initializers by name, and the x2 resize's "scales"."""
    return [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
            for name, shape in shapes.items()] + [
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]


def _up(src: str, dst: str) -> onnx.NodeProto:
    """Nearest x2 upsampling (asymmetric / floor, as the NPU repeats pixels)."""
    return helper.make_node("Resize", [src, "", "scales"], [dst], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _model(name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]
           ) -> onnx.ModelProto:
    """x (1, 8, 12, 12) -> y (1, 4, 12, 12), opset 13."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 12, 12])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _float_model(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "bias1"], ["a0"], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("Conv", ["x", "w2", "bias2"], ["b"], strides=[2, 2], pads=[1, 1, 1, 1]),
        _up("b", "b2"),
        helper.make_node("Concat", ["a", "b2"], ["c"], axis=1),
        helper.make_node("Conv", ["c", "w3", "bias3"], ["y"]),
    ]
    return _model("fpn", nodes, _weights(rng, w1=(16, 8, 1, 1), bias1=(16,), w2=(8, 8, 3, 3),
                                         bias2=(8,), w3=(4, 24, 1, 1), bias3=(4,)))


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    return ort_qdq(_float_model(np.random.default_rng(0)), (1, 8, 12, 12),
                   tmp_path_factory.mktemp("fpn"))


def test_resize_and_concat_run_on_the_npu(qdq):
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    kinds = [sl.layer.kind for seg in off.partition.segments for sl in seg.layers]
    assert len(off.partition.segments) == 1
    assert "resize" in kinds and "concat" in kinds
    cpu = {c["op"] for c in off.report["ops"]["cpu"]}
    assert not cpu & {"relax.image.resize2d", "relax.concat"}


def test_within_one_step_of_ort_and_bit_exact(qdq):
    """The segment on ORT's quantized input: bit-exact with the integer reference, and
    its int8 output within one step of ORT's last QuantizeLinear (graph optimizations
    off: the QDQ graph's own float semantics) for every element."""
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    d = segment_diffs(qdq, off, (1, 8, 12, 12))
    assert d.max() <= 1 and (d == 0).mean() >= 0.99


def _two_resizes(rng: np.random.Generator) -> onnx.ModelProto:
    """Two convs upsampled x2 and concatenated, then a 1x1 conv."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1] * 4),
        _up("c1", "r1"), _up("c2", "r2"),
        helper.make_node("Concat", ["r1", "r2"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["y"]),
    ]
    return _model("two_resizes", nodes, _weights(rng, w1=(16, 8, 3, 3), b1=(16,),
                                                 w2=(8, 8, 3, 3), b2=(8,), w3=(4, 24, 1, 1),
                                                 b3=(4,)))


def _an_add_and_a_conv(rng: np.random.Generator) -> onnx.ModelProto:
    """The sum of two upsampled convs concatenated with a third conv, then a 1x1 conv:
    the add (an element-wise layer) stores into the concat."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1] * 4),
        _up("c1", "r1"), _up("c2", "r2"),
        helper.make_node("Add", ["r1", "r2"], ["s"]),
        helper.make_node("Conv", ["x", "w3", "b3"], ["c3"], pads=[1] * 4),
        helper.make_node("Concat", ["s", "c3"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w4", "b4"], ["y"]),
    ]
    return _model("add_conv", nodes, _weights(rng, w1=(16, 8, 3, 3), b1=(16,),
                                              w2=(16, 8, 3, 3), b2=(16,), w3=(8, 8, 3, 3),
                                              b3=(8,), w4=(4, 24, 1, 1), b4=(4,)))


@pytest.mark.parametrize("make,in_place", [(_two_resizes, [0, 16]), (_float_model, [None, 16]),
                                           (_an_add_and_a_conv, [0, None])],
                         ids=["both_resized", "a_conv_and_a_resize", "an_add_and_a_conv"])
def test_concat_inputs_are_written_in_place(tmp_path, monkeypatch, make, in_place):
    """A resize that only the concat reads stores straight into the concat's output (its
    channels' slice, through the concat's table); a conv's output is copied by the
    concat as before, and with nothing left to copy the concat has no program.
    Bit-exact with the integer reference, within one step of ORT, and in fewer cycles
    than with every input copied."""
    from edgec.targets.edge_npu import fusion
    from edgec.targets.edge_npu.config import load_config
    from edgec.targets.edge_npu.lower import model_cycles

    qdq = ort_qdq(make(np.random.default_rng(1)), (1, 8, 12, 12), tmp_path)
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    (seg,) = off.partition.segments
    plan = fusion.fuse(seg.layers, seg.outputs)
    cat = next(sl for sl in plan if sl.layer.kind == "concat")
    placed = {sl.output: sl.into for sl in plan if sl.into is not None}
    assert [placed.get(v) for v in cat.inputs] == [
        None if o is None else (cat.output, o) for o in in_place]
    layers = {ly["name"]: ly for ly in off.report["layers"]}
    assert (layers[cat.name]["instructions"] == 0) == (None not in in_place)
    assert layers[cat.name]["inputs_in_place"] == sum(o is not None for o in in_place)
    assert sum(bool(ly.get("into_concat")) for ly in layers.values()) == sum(
        o is not None for o in in_place)
    made = next(sl.layer.kind for sl in plan if sl.into is not None)
    assert f"{made}>concat" in to_text(off.report, max_layers=100)
    d = segment_diffs(qdq, off, (1, 8, 12, 12))
    assert d.max() <= 1
    monkeypatch.setattr(fusion, "fuse_concat_inputs", lambda layers, outputs: layers)
    copied = offload(frontend.to_relax(qdq), "edge-npu-s")
    small = load_config("edge-npu-s")
    assert model_cycles(small, off.model) < model_cycles(small, copied.model)


def test_an_element_wise_input_stores_through_the_concats_table(tmp_path):
    """Where the concat maps an element-wise layer's output to its own scale (a table
    that is not the identity), the layer runs that table as a last LUT step before its
    pitched store: still bit-exact with the integer reference."""
    from edgec.targets.edge_npu import fusion
    from edgec.targets.edge_npu.config import load_config
    from edgec.targets.edge_npu.lower import lower

    from .conftest import assert_segments_bit_exact

    qdq = ort_qdq(_an_add_and_a_conv(np.random.default_rng(1)), (1, 8, 12, 12), tmp_path)
    segs = offload(frontend.to_relax(qdq), "edge-npu-s").partition.segments
    cat = next(sl for sl in segs[0].layers if sl.layer.kind == "concat")
    old = cat.layer.arrays["table0"]
    cat.layer.arrays["table0"] = np.clip(np.arange(-128, 128) * 2 - 7, -128, 127).astype(old.dtype)
    (add,) = [sl for sl in fusion.fuse(segs[0].layers, segs[0].outputs) if sl.into is not None]
    assert add.layer.kind == "add" and "table" in add.layer.arrays
    small = load_config("edge-npu-s")
    assert_segments_bit_exact(lower(small, segs), segs, small)


def _lateral(rng: np.random.Generator) -> onnx.ModelProto:
    """An FPN's top-down step: the input plus a coarser level (a stride-2 conv of it)
    upsampled x2, then a 1x1 conv."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1] * 4),
        _up("c1", "r1"),
        helper.make_node("Add", ["x", "r1"], ["s"]),
        helper.make_node("Conv", ["s", "w2", "b2"], ["y"]),
    ]
    return _model("lateral", nodes, _weights(rng, w1=(8, 8, 3, 3), b1=(8,), w2=(4, 8, 1, 1),
                                             b2=(4,)))


@pytest.mark.parametrize("make,folded", [(_lateral, 1), (_an_add_and_a_conv, 1)],
                         ids=["lateral", "two_upsampled"])
def test_an_add_reads_the_upsamples_input(tmp_path, monkeypatch, make, folded):
    """An add whose operand is an x2 upsample that nothing else reads takes the
    upsample's input instead (one upsample an add; the other of two stays a layer):
    the report names it ``resize+add``, the segment is bit-exact with the integer
    reference and within one step of ORT, in fewer simulated cycles than with the
    upsample stored and loaded."""
    from edgec.targets.edge_npu import fusion
    from edgec.targets.edge_npu.config import load_config
    from edgec.targets.edge_npu.lower import lower, model_cycles

    from .conftest import assert_segments_bit_exact

    qdq = ort_qdq(make(np.random.default_rng(2)), (1, 8, 12, 12), tmp_path)
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    (seg,) = off.partition.segments
    resizes = sum(sl.layer.kind == "resize" for sl in seg.layers)
    kinds = [ly["kind"] for ly in off.report["layers"]]
    assert kinds.count("resize") == resizes - folded
    assert sum(bool(ly.get("fused_resize")) for ly in off.report["layers"]) == folded
    assert "resize+add" in to_text(off.report, max_layers=100)
    small = load_config("edge-npu-s")
    assert_segments_bit_exact(lower(small, off.partition.segments), off.partition.segments,
                              small)
    assert segment_diffs(qdq, off, (1, 8, 12, 12)).max() <= 1
    monkeypatch.setattr(fusion, "fuse_upsample_add", lambda layers, outputs, bank: layers)
    stored = offload(frontend.to_relax(qdq), "edge-npu-s")
    assert model_cycles(small, off.model) < model_cycles(small, stored.model)
