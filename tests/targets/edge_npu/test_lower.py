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
    dev = NpuDevice(off.model)
    for i, seg in enumerate(off.partition.segments):
        ins = _random_inputs(seg, i)
        got = dev.run_segment(i, ins)
        ref = int_reference.run_segment(seg, ins)
        for g, r in zip(got, ref):
            assert g.dtype == np.int8 and np.array_equal(g, r), (config, seg.name)


def test_weights_cached_then_streamed(workdir):
    """Greedy placement: everything cached on edge-npu; edge-npu-s streams the rest."""
    big, small = cls_offload(workdir, "edge-npu"), cls_offload(workdir, "edge-npu-s")
    assert big.model.streamed_weights == 0 and big.model.cached_weights > 0
    assert small.model.streamed_weights > 0 and small.model.cached_weights > 0
    cfg = load_config("edge-npu-s")
    assert small.model.param_bytes + small.model.cached_weights <= cfg.parameter_cache
    streamed = [ly for s in small.model.segments for ly in s.layers if ly["streamed"]]
    assert streamed
    # streamed weights cross the link on every run and are counted
    dev = NpuDevice(small.model)
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
    live activations on a 304 KiB parameter cache. The plan moves the value read last
    to a host buffer instead of leaving a layer on the CPU, and stays bit-exact."""
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
        ("host", "host"), ("host", "pcache"), ("pcache", "pcache")]  # "a" is spilled
    ins = _random_inputs(seg, 1)
    got = NpuDevice(model).run_segment(0, ins)[0]
    assert np.array_equal(got, int_reference.run_segment(seg, ins)[0])
