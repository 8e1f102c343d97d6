"""A layer the lowering cannot place falls back to the CPU with a reason (never an error),
and ONNX Clip's imported form (``call_tir`` maximum / minimum) is seen by the patterns."""

from __future__ import annotations

import pytest
from edgec.targets.edge_npu import lower as lower_mod
from edgec.targets.edge_npu.offload import offload
from edgec.targets.edge_npu.programs import ProgramError

from .conftest import assert_segments_bit_exact
from .qdq_fixture import cls_relax


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qdq"))


def test_unplaceable_layer_falls_back(workdir, monkeypatch):
    real = lower_mod.layer_program

    def failing(cfg, layer, inputs, *args, **kwargs):
        # placement-dependent: ``fits`` (all at address 0) passes, the real plan fails
        if layer.kind == "gap" and inputs[0][1] != 0:
            raise ProgramError("test: no room for this global pool")
        return real(cfg, layer, inputs, *args, **kwargs)

    monkeypatch.setattr(lower_mod, "layer_program", failing)
    off = offload(cls_relax(workdir), "edge-npu")
    kinds = {ly["kind"] for ly in off.report["layers"]}
    assert "gap" not in kinds and "conv" in kinds
    means = [c for c in off.report["ops"]["cpu"] if c["op"] == "relax.mean"]
    assert means and all("could not be placed" in c["reason"] and "no room" in c["reason"]
                         for c in means)
    assert off.report["macs"]["npu_fraction"] > 0.9


def test_tiny_parameter_cache_keeps_only_what_fits(workdir):
    """An 8 KiB parameter cache holds not even cls's requant parameters: the layers with
    the most parameters leave together (one re-partition, not one per layer), the rest
    that fits stays on the NPU and runs bit-exactly, and every conv left on the CPU says
    why."""
    import dataclasses

    from edgec.targets.edge_npu.config import load_config

    base = load_config("edge-npu-s")
    cfg = dataclasses.replace(base, sram_total=base.sram_total - base.parameter_cache + 8192)
    off = offload(cls_relax(workdir), cfg)
    assert 0 < off.report["macs"]["npu_fraction"] < 0.5
    assert off.model.param_bytes + off.model.cached_weights <= cfg.parameter_cache
    convs = [c for c in off.report["ops"]["cpu"] if c["op"] == "relax.nn.conv2d"]
    assert convs and all("could not be placed" in c["reason"] or "does not fit" in c["reason"]
                         for c in convs)
    assert_segments_bit_exact(off.model, off.partition.segments, cfg)


def test_last_resort_leaves_everything_on_the_cpu(workdir, monkeypatch):
    """When lowering fails without naming a layer, the last resort partitions with every
    layer denied, so the build still succeeds, all on the CPU, each op with its reason
    (the deny-all table used to be an empty dict, which reads as no table at all)."""
    from edgec.targets.edge_npu import offload as offload_mod

    real = offload_mod.lower

    def failing(cfg, segments, *args, **kwargs):
        if segments:
            raise lower_mod.LowerError("test: nothing fits")
        return real(cfg, segments, *args, **kwargs)

    monkeypatch.setattr(offload_mod, "lower", failing)
    off = offload(cls_relax(workdir), "edge-npu")
    assert off.partition.segments == [] and off.report["macs"]["npu_fraction"] == 0
    convs = [c for c in off.report["ops"]["cpu"] if c["op"] == "relax.nn.conv2d"]
    assert convs and all("could not be placed" in c["reason"] for c in convs)


def test_clip_call_tir_normalized():
    import numpy as np
    from edgec.targets.edge_npu.partition import normalize_clip
    from tvm import relax, topi

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 2, 2), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            lo = bb.emit(relax.op.where(relax.op.isnan(relax.const(0.0)),
                                        relax.const(-np.inf), relax.const(0.0)))
            a = bb.emit_te(topi.maximum, x, lo)
            b = bb.emit_te(topi.minimum, a, relax.const(6.0))
            out = bb.emit_output(b)
        bb.emit_func_output(out)
    mod = normalize_clip(bb.get())
    text = mod["main"].script()
    assert "R.clip" in text and "call_tir" not in text


def _gap_segment(h=24, w=24, c=64):
    """conv 1x1 (8 -> c) -> global average pool: the pool reads the conv's output in
    place as weights, so that value cannot be spilled to the host."""
    import numpy as np
    from edgec.targets.edge_npu.layers import Layer, QTensor
    from edgec.targets.edge_npu.lower import SegLayer, Segment
    from edgec.targets.edge_npu.programs import Conv

    from .tuner_fixture import _conv_layer

    conv = _conv_layer(np.random.default_rng(0), h, w, 8, c, 1)
    x = conv.out
    out = QTensor((1, 1, c), 0.02, 0)
    gap = Layer("gap", [x], out, {"conv": Conv(1, 1, h * w, c), "zp_out": 0, "qmin": -128,
                                  "qmax": 127},
                {"bias": np.full(c, -x.zp * h * w), "mult": np.full(c, 1 << 20),
                 "shift": np.full(c, 31)}, ["relax.mean"])
    layers = [SegLayer("c", conv, ["in"], "x"), SegLayer("g", gap, ["x"], "y")]
    return Segment("s", ["in"], ["y"], layers, {"in": (1, 8, h, w), "y": (1, c, 1, 1)},
                   {"in": conv.inputs[0], "x": x, "y": out})


def test_pinned_pool_input_blames_the_pool(small):
    """The scratch cannot hold the pool's input (which must stay on chip) even with every
    other value spilled: the pool is to blame, not the layer with the most bytes."""
    import dataclasses

    seg = _gap_segment()
    x_bytes = seg.tensors["x"].size
    cfg = dataclasses.replace(small, sram_total=small.sram_total - small.parameter_cache +
                              x_bytes // 2 + 4096)
    with pytest.raises(lower_mod.LowerError, match="even with spills") as exc:
        lower_mod.lower(cfg, [seg])
    assert [ly.kind for ly in exc.value.layers] == ["gap"]


def test_no_scratch_blames_the_largest_weights(small):
    """Parameters plus the largest weight's staging area leave no scratch at all: the
    layers with the most parameter-cache bytes (the 1x1 conv's weights) are to blame."""
    import dataclasses

    seg = _gap_segment(4, 4, 256)
    images = [lower_mod.layer_images(small, sl.layer) for sl in seg.layers]
    params = sum(lower_mod._pcache_bytes(p, b"") for p, _ in images)
    weights = max(len(w) for _, w in images)
    cfg = dataclasses.replace(small, sram_total=small.sram_total - small.parameter_cache +
                              params + weights // 2)
    with pytest.raises(lower_mod.LowerError, match="exceed") as exc:
        lower_mod.lower(cfg, [seg])
    assert [ly.kind for ly in exc.value.layers] == ["conv"]
