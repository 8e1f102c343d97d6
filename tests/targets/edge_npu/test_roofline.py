"""The report's roofline: which layers are compute-bound, and a ceiling no mapping beats;
per-layer (SYNC section) figures add up to the program's."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import programs, tuner
from edgec.targets.edge_npu.isa import Space
from edgec.targets.edge_npu.lower import lower
from edgec.targets.edge_npu.mapping import workload_key
from edgec.targets.edge_npu.report import roofline
from edgec.targets.edge_npu.simulator import simulate

from .tuner_fixture import small_model


def _info(cfg, conv, inp, out, streamed=False, lut=False, scale=False, residual=False):
    return {"shape": {"h": conv.h}, "macs": conv.macs,
            "weights": conv.kh * conv.kw * conv.cout * (1 if conv.depthwise else conv.cin),
            "workload": workload_key(cfg.name, conv, inp, out, streamed, lut=lut,
                                     scale=scale, residual=residual)}


@pytest.mark.parametrize("conv", [programs.Conv(20, 20, 192, 192),
                                  programs.Conv(40, 40, 192, 192),  # several bands in WS
                                  programs.Conv(10, 10, 384, 360),
                                  programs.Conv(40, 40, 96, 24, 3, 3, 1, (1, 1, 1, 1)),
                                  programs.Conv(12, 48, 88, 88, 5, 5, 1, (2, 2, 2, 2), True)])
@pytest.mark.parametrize("lut", [False, True], ids=["requant", "requant+lut"])
@pytest.mark.parametrize("queue", [4, 0], ids=["vector-queue", "no-queue"])
def test_ceiling_bounds_every_mapping(npu, conv, lut, queue):
    import dataclasses

    cfg = dataclasses.replace(npu, vector_queue=queue)
    info = _info(cfg, conv, Space.PCACHE, Space.PCACHE, lut=lut)
    roof = roofline(cfg, info)
    task = tuner.Task(info["workload"], conv, "conv", Space.PCACHE, Space.PCACHE, False, lut)
    measured = [tuner.measure(cfg, task, mp)[0] for mp in tuner.candidates(cfg, task)]
    assert min(c for c in measured if c is not None) >= roof["ceiling_cycles"]


@pytest.mark.parametrize("conv", [programs.Conv(20, 20, 192, 192),
                                  programs.Conv(40, 40, 192, 192),
                                  programs.Conv(10, 10, 384, 360)])
@pytest.mark.parametrize("fused", ["scale", "residual", "both"])
@pytest.mark.parametrize("queue", [4, 0], ids=["vector-queue", "no-queue"])
def test_ceiling_counts_a_fused_scale_and_residual(npu, conv, fused, queue):
    """The ceiling takes the fused VEC MUL / ADD into account: it still bounds every
    mapping, and it is above the plain conv's."""
    import dataclasses

    cfg = dataclasses.replace(npu, vector_queue=queue)
    scale, residual = fused in ("scale", "both"), fused in ("residual", "both")
    info = _info(cfg, conv, Space.PCACHE, Space.PCACHE, scale=scale, residual=residual)
    roof = roofline(cfg, info)
    plain = roofline(cfg, _info(cfg, conv, Space.PCACHE, Space.PCACHE))
    assert roof["ceiling_cycles"] > plain["ceiling_cycles"]
    task = tuner.Task(info["workload"], conv, "conv", Space.PCACHE, Space.PCACHE, False,
                      False, scale, residual)
    measured = [tuner.measure(cfg, task, mp)[0] for mp in tuner.candidates(cfg, task)]
    assert min(c for c in measured if c is not None) >= roof["ceiling_cycles"]


@pytest.mark.parametrize("conv", [programs.Conv(64, 64, 3, 16, 3, 3, 2, (1, 1, 1, 1)),
                                  programs.Conv(40, 40, 24, 4, phases=2),
                                  programs.Conv(20, 20, 64, 64, stride=2)])
@pytest.mark.parametrize("side", ["in", "out"])
def test_ceiling_of_a_layer_on_the_link(npu, conv, side):
    """A layer that reads or writes the host moves those bytes over the link at least:
    its ceiling is not below them (it was the on-chip path's, 20x below for det's input
    conv), and it still bounds every mapping."""
    inp, out = (Space.HOST, Space.PCACHE) if side == "in" else (Space.PCACHE, Space.HOST)
    info = _info(npu, conv, inp, out)
    roof = roofline(npu, info)
    rows = conv.out_h if conv.kh < conv.sh else conv.h  # 1x1 stride 2: every other row
    link = (rows * conv.w * conv.cin if side == "in" else
            conv.out_h * conv.out_w * conv.cout) / npu.host_bytes_per_cycle
    assert roof["ceiling_cycles"] >= npu.layer_launch_cycles + link
    task = tuner.Task(info["workload"], conv, "conv", inp, out, False, False)
    measured = [tuner.measure(npu, task, mp)[0] for mp in tuner.candidates(npu, task)]
    assert min(c for c in measured if c is not None) >= roof["ceiling_cycles"]


def test_bound_follows_where_the_data_lives(npu):
    conv = programs.Conv(20, 20, 192, 192)
    assert roofline(npu, _info(npu, conv, Space.PCACHE, Space.PCACHE))["bound"] == "compute"
    assert roofline(npu, _info(npu, conv, Space.HOST, Space.PCACHE))["bound"] == "load"
    assert roofline(npu, _info(npu, conv, Space.PCACHE, Space.HOST))["bound"] == "store"
    dw = programs.Conv(20, 20, 192, 192, 5, 5, 1, (2, 2, 2, 2), True)  # 25 MACs per output
    assert roofline(npu, _info(npu, dw, Space.PCACHE, Space.PCACHE))["bound"] != "compute"


@pytest.mark.parametrize("cascades", [False, True], ids=["layers", "cascaded"])
def test_sections_add_up(npu, cascades):
    """One section per SYNC: a layer's (its cycles alone) or a cascade's (its layers
    together, as the report's cascades section gives them); they sum to the program's
    cycles, MACs and energy."""
    model = lower(npu, small_model(), cascades=cascades)
    layers = model.segments[0].layers
    rep = simulate(npu, model.segments[0].program)
    secs = rep.sections
    want: list[int] = []
    for i, ly in enumerate(layers):
        group = ly.get("cascade")
        if group is None:
            want.append(ly["cycles"])
        elif i == 0 or (layers[i - 1].get("cascade") or {}).get("name") != group["name"]:
            want.append(group["cycles"])
    assert (len(want) < len(layers)) == cascades  # the small model has one cascade
    assert [s["cycles"] for s in secs] == want
    assert sum(s["cycles"] for s in secs) == rep.cycles
    assert sum(s["macs"] for s in secs) == rep.macs
    assert np.isclose(sum(s["energy_j"] for s in secs) + npu.static_w * rep.invoke_cycles
                      / npu.clock_hz, rep.energy.total_j)
