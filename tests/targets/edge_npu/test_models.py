"""Whole-model sanity: MobileNet v1/v2 layer tables on the usb link vs Coral's latency.

Oracle: coral.ai published Edge TPU USB3 latency, MobileNet v1 2.2 ms, v2 2.3 ms.
"""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import models
from edgec.targets.edge_npu.isa import Space
from edgec.targets.edge_npu.simulator import Simulator, simulate

CORAL_MS = {"mobilenet_v1": 2.2, "mobilenet_v2": 2.3}


@pytest.mark.parametrize("name", list(CORAL_MS))
def test_mobilenet_latency_near_coral(npu, name):
    assert npu.link.name == "usb"
    mp = models.model_program(npu, models.load_table(name))
    rep = simulate(npu, mp.instrs, cached_weights=mp.cached_weights)
    print(f"{name}: {rep.summary()} (Coral {CORAL_MS[name]} ms)")
    assert mp.streamed_weights == 0  # as on Coral: MobileNets fit the parameter cache
    assert abs(rep.ms / CORAL_MS[name] - 1) <= 0.25


def test_mobilenet_v1_functional_run_and_soc_link(npu):
    """A full functional run works, and the faster soc link is strictly faster."""
    mp = models.model_program(npu, models.load_table("mobilenet_v1"))
    sim = Simulator(npu, host_bytes=mp.host_bytes)
    for space, addr, arr in mp.images:
        sim.mem.write(space, addr, arr)
    sim.mem.write(Space.HOST, mp.input_addr,
                  np.random.default_rng(0).integers(-128, 128, 224 * 224 * 3, dtype=np.int8))
    rep = sim.run(mp.instrs, mp.cached_weights)
    assert rep.sram_traffic > 0 and rep.energy.total_j > 0
    assert rep.sram_peak["pcache"] <= npu.parameter_cache
    soc = simulate(npu.with_link("soc"), mp.instrs)
    assert soc.seconds < rep.seconds
