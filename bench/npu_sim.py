"""Time the edge-npu simulator on MobileNet v1/v2 layer tables (functional + timing).

Usage: python bench/npu_sim.py [config]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from edgec.targets.edge_npu import config, models
from edgec.targets.edge_npu.isa import Space
from edgec.targets.edge_npu.simulator import Simulator


def main(name: str = "edge-npu") -> None:
    cfg = config.load_config(name)
    for table in ("mobilenet_v1", "mobilenet_v2"):
        mp = models.model_program(cfg, models.load_table(table))
        sim = Simulator(cfg, host_bytes=mp.host_bytes)
        for space, addr, arr in mp.images:
            sim.mem.write(space, addr, arr)
        sim.mem.write(Space.HOST, mp.input_addr, np.random.default_rng(0).integers(
            -128, 128, 224 * 224 * 3, dtype=np.int8))
        t0 = time.perf_counter()
        rep = sim.run(mp.instrs, mp.cached_weights)
        dt = time.perf_counter() - t0
        print(f"{table}: {len(mp.instrs)} instructions, {mp.macs / 1e6:.0f} M MACs, "
              f"simulated in {dt:.2f} s wall\n  {rep.summary()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
