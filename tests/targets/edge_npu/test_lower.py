"""Lowering: NPU segments run bit-exactly against the integer reference; memory plan;
package files round-trip without pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edgec.targets.edge_npu import bundle, int_reference, programs
from edgec.targets.edge_npu.config import load_config
from edgec.targets.edge_npu.int_reference import from_hwc, run_layer, to_hwc
from edgec.targets.edge_npu.isa import Space
from edgec.targets.edge_npu.layers import Layer, QTensor
from edgec.targets.edge_npu.lower import SegLayer, Segment, lower
from edgec.targets.edge_npu.runtime import NpuDevice

from .conftest import assert_segments_bit_exact
from .qdq_fixture import cls_offload


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qdq"))


def _random_inputs(seg, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, seg.shapes[v]).astype(np.int8) for v in seg.inputs]


@pytest.mark.parametrize("config", ["edge-npu-s", "edge-npu"])
def test_segments_bit_exact(workdir, config):
    off = cls_offload(workdir, config)
    assert_segments_bit_exact(off.model, off.partition.segments, load_config(config))


def test_weights_cached_then_streamed(workdir):
    """Greedy placement: everything cached on edge-npu; on edge-npu-s with 64 KiB less
    SRAM (a 240 KiB parameter cache) the weights that do not fit are streamed."""
    import dataclasses

    from edgec.targets.edge_npu.offload import offload

    from .qdq_fixture import cls_relax

    big = cls_offload(workdir, "edge-npu")
    assert big.model.streamed_weights == 0 and big.model.cached_weights > 0
    base = load_config("edge-npu-s")
    cfg = dataclasses.replace(base, sram_total=base.sram_total - 64 * 1024)
    small = offload(cls_relax(workdir), cfg)
    assert small.model.streamed_weights > 0 and small.model.cached_weights > 0
    assert small.model.param_bytes + small.model.cached_weights <= cfg.parameter_cache
    streamed = [ly for s in small.model.segments for ly in s.layers if ly["streamed"]]
    assert streamed
    # streamed weights cross the link on every run and are counted
    dev = NpuDevice(small.model, cfg)
    for i, seg in enumerate(small.partition.segments):
        dev.run_segment(i, _random_inputs(seg, 0))
    assert sum(r.streamed_weights for r in dev.reports) == small.model.streamed_weights


def test_bundle_round_trip(workdir):
    off = cls_offload(workdir, "edge-npu-s")
    files = off.files
    assert set(files) == {"npu.json", "npu.bin"}
    meta = json.loads(files["npu.json"])
    assert meta["format"] == "edgec-npu" and len(meta["segments"]) == len(off.model.segments)
    model, key = bundle.from_files(files)
    assert key == bundle.model_key(off.model)
    for a, b in zip(model.segments, off.model.segments):
        assert a.program == b.program
    assert [(s, a, d) for s, a, d in model.images] == off.model.images


def test_strided_rows_conv_and_wide_rows(small):
    """A (2, 1)-strided 3x3 conv whose rows are wider than the 14-bit DMA stride
    (96 px x 200 ch = 19200 B per row): one output row per band, one LOAD per row."""
    rng = np.random.default_rng(3)
    conv = programs.Conv(6, 96, 200, 200, 3, 3, 1, (1, 1, 1, 1), True, stride_h=2)
    assert conv.out_h == 3
    cfg = load_config("edge-npu")
    layer = Layer("conv", [QTensor((6, 96, 200), 0.02, 5)], QTensor((3, 96, 200), 0.05, -3),
                  {"conv": conv, "zp_out": -3, "qmin": -128, "qmax": 127},
                  {"weights": rng.integers(-127, 128, (200, 3, 3)).astype(np.int8),
                   "bias": rng.integers(-5000, 5000, 200),
                   "mult": np.full(200, 1 << 30), "shift": np.full(200, -6)})
    seg = Segment("t", ["x"], ["y"], [SegLayer("t", layer, ["x"], "y")],
                  {"x": (1, 200, 6, 96), "y": (1, 200, 3, 96)},
                  {"x": layer.inputs[0], "y": layer.out})
    model = lower(cfg, [seg])
    x = rng.integers(-128, 128, (1, 200, 6, 96)).astype(np.int8)
    got = NpuDevice(model, cfg).run_segment(0, [x])[0]
    ref = from_hwc(run_layer(layer, [to_hwc(x)]), (1, 200, 3, 96))
    assert np.array_equal(got, ref)
    loads = [i for i in model.segments[0].program if i.op.name == "LOAD" and i.kind == 0]
    assert all(i.rows == 1 for i in loads)
    assert model.images and all(sp in (Space.PCACHE, Space.HOST) for sp, _, _ in model.images)


def test_activations_that_do_not_fit_spill_to_host_buffers(small):
    """A skip connection keeps a 128 KiB activation alive across two more: 384 KiB of
    live activations on a 304 KiB parameter cache. The plan moves a value to a host
    buffer instead of leaving a layer on the CPU, and stays bit-exact. It moves "b"
    (written once, read once: 256 KiB over the link), not "a", the value read last
    (Belady's choice, read twice: 384 KiB)."""
    from edgec.targets.edge_npu import intmath

    from .tuner_fixture import _conv_layer

    rng = np.random.default_rng(2)
    c1 = _conv_layer(rng, 64, 64, 32, 32, 1)
    c2 = _conv_layer(rng, 64, 64, 32, 32, 1, s_in=0.04, zp_in=-5)
    c3 = _conv_layer(rng, 64, 64, 32, 32, 1, s_in=0.04, zp_in=-5)
    t = c1.out
    mult, shift = intmath.quantize_multiplier(t.scale * t.scale / 0.05)
    mul = Layer("mul", [t, c3.out], QTensor(t.shape, 0.05, 1),
                {"broadcast": False, "zp1": t.zp, "zp2": t.zp, "mult": mult, "shift": shift,
                 "zp_out": 1, "qmin": -128, "qmax": 127}, ops=["relax.multiply"])
    layers = [SegLayer("c1", c1, ["x"], "a"), SegLayer("c2", c2, ["a"], "b"),
              SegLayer("c3", c3, ["b"], "c"), SegLayer("mul", mul, ["a", "c"], "y")]
    tensors = {"x": c1.inputs[0], "a": t, "b": c2.out, "c": c3.out, "y": mul.out}
    seg = Segment("s", ["x"], ["y"], layers, {"x": (1, 32, 64, 64), "y": (1, 32, 64, 64)},
                  tensors)
    model = lower(small, [seg])
    assert model.scratch_bytes <= small.parameter_cache
    places = [json.loads(ly["workload"]) for ly in model.segments[0].layers if "workload" in ly]
    assert [(p["in"], p["out"]) for p in places] == [
        ("host", "pcache"), ("pcache", "host"), ("host", "pcache")]  # "b" is spilled
    ins = _random_inputs(seg, 1)
    got = NpuDevice(model).run_segment(0, ins)[0]
    assert np.array_equal(got, int_reference.run_segment(seg, ins)[0])


def _plan_case(kinds_sizes, edges):
    """A segment of fake layers for the memory planner: ``kinds_sizes`` value -> (kind of
    the layer writing it, size in 4 KiB units), ``edges`` value -> its inputs."""
    unit = 4096
    tensors = {"x": QTensor((1, 1, unit), 1.0, 0)}
    layers = []
    for v, (kind, n) in kinds_sizes.items():
        tensors[v] = QTensor((1, n, unit), 1.0, 0)
        layers.append(SegLayer(v, Layer(kind, [], tensors[v]), edges[v], v))
    out = list(kinds_sizes)[-1]
    return Segment("s", ["x"], [out], layers, {}, tensors), unit


def test_plan_places_large_buffers_first_so_holes_do_not_split_them():
    """a [0, 1] (2 units), b [1, 3] (1), c [2, 3] (3): first fit in layer order puts b
    above a, and c, born after a dies, does not fit a's 2-unit hole: 6 units. Placing by
    size, largest first, c and a share offset 0 (their lifetimes do not overlap) and b
    goes above: 4 units, the most ever live."""
    from edgec.targets.edge_npu.lower import _plan_activations

    seg, unit = _plan_case({"a": ("conv", 2), "b": ("conv", 1), "c": ("conv", 3),
                            "y": ("add", 1)},
                           {"a": ["x"], "b": ["a"], "c": ["x"], "y": ["b", "c"]})
    loc, used = _plan_activations(seg, 0, 1 << 40, {"x": 0, "y": 0})
    assert used == 4 * unit
    assert loc["a"] == loc["c"] == (Space.PCACHE, 0) and loc["b"] == (Space.PCACHE, 3 * unit)
    _plan_activations(seg, 0, 4 * unit, {"x": 0, "y": 0}, stop_on_fail=True)  # fits


def test_plan_element_wise_layers_write_over_an_input_that_dies():
    """A LUT and an ADD take the buffer of an input they read last; a conv never does
    (its bands read rows around the ones they write)."""
    from edgec.targets.edge_npu.lower import _plan_activations

    seg, unit = _plan_case({"a": ("conv", 2), "b": ("lut", 2), "c": ("conv", 2),
                            "d": ("add", 2), "y": ("conv", 1)},
                           {"a": ["x"], "b": ["a"], "c": ["b"], "d": ["b", "c"],
                            "y": ["d"]})
    loc, used = _plan_activations(seg, 0, 1 << 40, {"x": 0, "y": 0})
    assert loc["a"] == loc["b"] and loc["d"] in (loc["b"], loc["c"])
    assert loc["c"] != loc["b"]
    assert used == 4 * unit
    loc, used = _plan_activations(seg, 0, 1 << 40, {"x": 0, "y": 0}, in_place=False)
    assert len({loc[v] for v in "abcd"}) >= 3 and used == 6 * unit


def test_lut_chains_compose_and_fuse_into_the_conv(small):
    """conv -> LUT -> LUT -> LUT (det's affine, hard-swish, / 6 and affine): one layer,
    the composed table applied in the conv program; the same integers as the unfused
    layers."""
    from .tuner_fixture import _conv_layer

    rng = np.random.default_rng(4)
    c1 = _conv_layer(rng, 12, 12, 16, 24, 3)
    t = c1.out
    luts = [Layer("lut", [t], t, arrays={"table": rng.integers(-128, 128, 256)},
                  ops=["relax.multiply"]) for _ in range(3)]
    layers = [SegLayer("c1", c1, ["x"], "a0")] + [
        SegLayer(f"l{i}", lut, [f"a{i}"], f"a{i + 1}") for i, lut in enumerate(luts)]
    tensors = {"x": c1.inputs[0], **{f"a{i}": t for i in range(4)}}
    seg = Segment("s", ["x"], ["a3"], layers, {"x": (1, 16, 12, 12), "a3": (1, 24, 12, 12)},
                  tensors)
    model = lower(small, [seg])
    assert [ly["kind"] for ly in model.segments[0].layers] == ["conv"]
    assert model.segments[0].layers[0]["fused_lut"]
    ins = _random_inputs(seg, 2)
    assert np.array_equal(NpuDevice(model).run_segment(0, ins)[0],
                          int_reference.run_segment(seg, ins)[0])


def test_segment_without_macs_stays_on_the_cpu():
    """A QDQ sigmoid alone would only send its tensor over the link and back."""
    import onnx
    from edgec import frontend
    from edgec.targets.edge_npu.offload import NO_MACS, offload
    from onnx import TensorProto, helper, numpy_helper

    s, z = numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(
        np.int8(0), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["e"]),
             helper.make_node("QuantizeLinear", ["e", "s", "z"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 4, 4])], [s, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    off = offload(frontend.to_relax(onnx.load_from_string(model.SerializeToString())),
                  "edge-npu-s")
    assert off.partition.segments == []
    assert any(c["op"] == "relax.sigmoid" and c["reason"].endswith(NO_MACS)
               for c in off.report["ops"]["cpu"])


def test_narrow_convs_pack_output_pixels(workdir):
    """cls on edge-npu: lowering packs dense convs with few output channels and
    depthwise convs, the packed segments stay bit-exact (``test_segments_bit_exact``),
    and each packed layer takes fewer simulated cycles than the same layer unpacked
    with its default mapping."""
    import dataclasses

    from edgec.targets.edge_npu import tuner
    from edgec.targets.edge_npu.mapping import Mapping

    cfg = load_config("edge-npu")
    off = cls_offload(workdir, "edge-npu")
    tasks = [tuner.Task.from_key(ly["workload"]) for s in off.model.segments
             for ly in s.layers if "workload" in ly]
    packed = [t for t in tasks if t.conv.pack > 1]
    assert all(t.conv.cout * t.conv.pack <= cfg.cols for t in packed if not t.conv.depthwise)
    assert sum(t.conv.depthwise for t in packed) >= 5 and sum(
        not t.conv.depthwise for t in packed) >= 5
    for t in packed:
        plain = dataclasses.replace(t, conv=dataclasses.replace(t.conv, pack=1))
        got, _ = tuner.measure(cfg, t, Mapping())
        was, _ = tuner.measure(cfg, plain, Mapping())
        assert got < was, (t.key, got, was)


@pytest.mark.parametrize("shrink", [0, 64 * 1024], ids=["roomy", "tight"])
def test_packing_spends_only_free_parameter_cache(workdir, shrink):
    """Packed weights are larger; lowering packs only while they fit the parameter cache
    beside the activations, so packing never streams a weight that would have been
    cached, and with room it saves cycles."""
    import dataclasses

    from edgec.targets.edge_npu.offload import offload
    from edgec.targets.edge_npu.simulator import simulate

    from .qdq_fixture import cls_relax

    base = load_config("edge-npu-s")
    cfg = dataclasses.replace(base, sram_total=base.sram_total - shrink)
    segs = offload(cls_relax(workdir), cfg).partition.segments
    plain = lower(cfg, segs, pack=False)
    packed = lower(cfg, segs)
    assert packed.streamed_weights == plain.streamed_weights
    assert (shrink > 0) == (plain.streamed_weights > 0)
    assert packed.param_bytes + packed.cached_weights <= cfg.parameter_cache
    cycles = [sum(simulate(cfg, s.program).cycles for s in m.segments) for m in (plain, packed)]
    assert cycles[1] < cycles[0] if not shrink else cycles[1] <= cycles[0]
