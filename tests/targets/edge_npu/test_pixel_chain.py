"""Squeeze-excite as one layer (``fusion.fuse_pixel_chains`` + ``pixel_chain``): a
global pool and the one-pixel convs after it run as one chain of passes that stays on
chip, equal bit for bit to the unfused integer reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from edgec.targets.edge_npu import intmath
from edgec.targets.edge_npu.fusion import fuse
from edgec.targets.edge_npu.isa import Op
from edgec.targets.edge_npu.layers import Layer, QTensor
from edgec.targets.edge_npu.lower import LowerError, SegLayer, Segment, lower
from edgec.targets.edge_npu.programs import Conv
from edgec.targets.edge_npu.simulator import simulate

from .conftest import assert_segments_bit_exact
from .tuner_fixture import _conv_layer


def _se(h, w, c, mid, lut=True, mid_is_output=False, seed=0):
    """conv 1x1 (8 -> c) -> x; global pool -> conv 1x1 (c -> mid, ReLU) -> conv 1x1
    (mid -> c) [-> LUT]: PP-OCR's squeeze-excite, whose output scales x downstream."""
    rng = np.random.default_rng(seed)
    conv = _conv_layer(rng, h, w, 8, c, 1)
    x = conv.out
    g = QTensor((1, 1, c), 0.02, 1)
    ms = [intmath.quantize_multiplier(float(v)) for v in rng.uniform(0.2, 0.9, c)]
    gap = Layer("gap", [x], g, {"conv": Conv(1, 1, h * w, c), "zp_out": g.zp, "qmin": -128,
                                "qmax": 127},
                {"bias": np.full(c, -x.zp * h * w), "mult": np.array([m for m, _ in ms]),
                 "shift": np.array([s + 6 for _, s in ms])}, ["relax.mean"])
    c1 = _conv_layer(rng, 1, 1, c, mid, 1)
    c1 = dataclasses.replace(c1, attrs={**c1.attrs, "qmin": c1.out.zp})  # ReLU
    c2 = _conv_layer(rng, 1, 1, mid, c, 1)
    layers = [SegLayer("c", conv, ["in"], "x"), SegLayer("g", gap, ["x"], "g"),
              SegLayer("c1", c1, ["g"], "m"), SegLayer("c2", c2, ["m"], "e")]
    tensors = {"in": conv.inputs[0], "x": x, "g": g, "m": c1.out, "e": c2.out}
    shapes = {"in": (1, 8, h, w), "x": (1, c, h, w), "s": (1, c, 1, 1), "e": (1, c, 1, 1),
              "m": (1, mid, 1, 1)}
    out = "e"
    if lut:
        s = QTensor((1, 1, c), 1 / 255, -128)
        table = intmath.build_lut(lambda v: np.clip(v + 3, 0, 6) / 6, c2.out.scale,
                                  c2.out.zp, s.scale, s.zp)
        layers.append(SegLayer("h", Layer("lut", [c2.out], s, arrays={"table": table},
                                          ops=["relax.clip"]), ["e"], "s"))
        tensors["s"], out = s, "s"
    outs = [out, "m"] if mid_is_output else [out]
    return Segment("se", ["in"], outs, layers, shapes, tensors)


@pytest.mark.parametrize("shape", [(6, 10, 24, 8),     # one N-tile per pass on edge-npu
                                   (48, 48, 96, 24),   # a pool over 2304 > 2047 pixels
                                   (3, 96, 200, 50)])  # PP-OCR cls's last blocks
@pytest.mark.parametrize("lut", [True, False], ids=["lut", "no-lut"])
@pytest.mark.parametrize("config", ["small", "npu", "npu-no-queue"])
def test_se_is_one_layer_bit_exact(request, config, shape, lut):
    """The pool and both convs (and the LUT) are one ``se`` layer: one launch and one
    store instead of three, fewer cycles than the unfused layers, and the same integers
    as the unfused reference (each pass reads the last one's output in the bank: with a
    vector queue the hazard unit orders them, without one the compute queue does)."""
    cfg = request.getfixturevalue(config.removesuffix("-no-queue"))
    if config.endswith("-no-queue"):
        cfg = dataclasses.replace(cfg, vector_queue=0)
    seg = _se(*shape, lut=lut)
    model = lower(cfg, [seg])
    assert_segments_bit_exact(model, [seg], cfg, seed=2)
    infos = model.segments[0].layers
    assert [ly["kind"] for ly in infos] == ["conv", "se"] and infos[1]["name"] == "g.se"
    se = infos[1]
    *_, c, mid = shape
    assert se["macs"] == 2 * c * mid and se["weights"] == 2 * c * mid
    prog = model.segments[0].program
    last = max(i for i, ins in enumerate(prog) if ins.op == Op.SYNC)
    assert sum(ins.op == Op.STORE for ins in prog[last:]) == -(-c // cfg.cols)  # last pass
    unfused = lower(cfg, [_se(*shape, lut=lut)], fuse=False)
    assert len(unfused.segments[0].layers) == 4 + lut
    assert simulate(cfg, prog).cycles < simulate(cfg, unfused.segments[0].program).cycles


def test_se_with_streamed_weights_bit_exact(small):
    """When the parameter cache cannot hold the convs' weights they stream in after the
    pooled vector's load, and the first conv pass waits for them."""
    full = lower(small, [_se(6, 10, 64, 32)])
    assert full.streamed_weights == 0
    base = small.sram_total - small.parameter_cache
    for pc in range(2048, 32768, 256):  # the smallest cache that runs it, streaming
        cfg = dataclasses.replace(small, sram_total=base + pc)
        try:
            model = lower(cfg, [_se(6, 10, 64, 32)])
        except LowerError:  # too small for the activations: a larger cache
            continue
        if any(ly["streamed"] for ly in model.segments[0].layers if ly["kind"] == "se"):
            break
    else:
        pytest.fail("no cache size streams the squeeze-excite weights")
    assert model.streamed_weights >= 2 * 64 * 32  # (the first conv may stream too)
    assert_segments_bit_exact(model, [_se(6, 10, 64, 32)], cfg, seed=4)


def test_first_pass_cannot_stream(npu):
    """The first pass's CFG pops one token, the vector's: its matrix must be on chip."""
    from edgec.targets.edge_npu.isa import Space
    from edgec.targets.edge_npu.pixel_chain import Pass, chain_program
    from edgec.targets.edge_npu.programs import ProgramError

    passes = [Pass(8, 4, 0, 0, streamed=True)]
    with pytest.raises(ProgramError, match="first pass"):
        chain_program(npu, (Space.PCACHE, 0), passes, (Space.PCACHE, 64), (0, 0, 32))


def test_chain_stops_where_a_value_is_read_elsewhere():
    """A value the segment also returns ends the chain after the layer that makes it:
    the first conv's output keeps the second conv out; the pool's own output leaves
    nothing to fuse."""
    seg = _se(6, 10, 24, 8)
    assert [sl.layer.kind for sl in fuse(seg.layers, seg.outputs)] == ["conv", "se"]
    seg = _se(6, 10, 24, 8, mid_is_output=True)
    assert [sl.layer.kind for sl in fuse(seg.layers, seg.outputs)] == ["conv", "se", "conv"]
    seg = dataclasses.replace(seg, outputs=[*seg.outputs, "g"])
    assert [sl.layer.kind for sl in fuse(seg.layers, seg.outputs)] == ["conv", "gap", "conv",
                                                                       "conv"]
