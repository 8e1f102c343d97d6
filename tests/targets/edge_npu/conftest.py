"""Shared fixtures: bundled configs and a helper that runs one layer functionally."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import config, programs
from edgec.targets.edge_npu.isa import Space
from edgec.targets.edge_npu.simulator import Simulator


@pytest.fixture(scope="session")
def small():
    return config.load_config("edge-npu-s")


@pytest.fixture(scope="session")
def npu():
    return config.load_config("edge-npu")


def run_conv(cfg, conv, x, w, bias, mult, shift, zp_out, qmin, qmax, zp_in=0,
             dataflow=None, lut=None, stream=False, band_rows=None, order="band"):
    """Place tensors, run the generated program, return (output HWC, report)."""
    sim = Simulator(cfg, host_bytes=1 << 22)
    out_addr = 1 << 21
    wpack = programs.pack_weights(conv, w, cfg.cols)
    ppack = programs.pack_requant(conv, bias, mult, shift, zp_out, qmin, qmax, cfg.cols)
    sim.mem.write(Space.HOST, 0, x.astype(np.int8))
    params = 0
    wgt = ppack.nbytes + 1024
    sim.mem.write(Space.PCACHE, params, ppack)
    lut_addr = None
    if lut is not None:
        lut_addr = params + ppack.nbytes
        sim.mem.write(Space.PCACHE, lut_addr, lut.astype(np.int32))
    stream_from = None
    if stream:
        stream_from = 1 << 20
        sim.mem.write(Space.HOST, stream_from, wpack)
    else:
        sim.mem.write(Space.PCACHE, wgt, wpack)
    place = programs.Placement(inp=(Space.HOST, 0), out=(Space.HOST, out_addr), wgt=wgt,
                               params=params, zp_in=zp_in, stream_from=stream_from)
    lp = programs.conv2d_layer(cfg, conv, place, dataflow, lut=lut_addr, band_rows=band_rows,
                               order=order)
    rep = sim.run(lp.instrs + programs.end(), cached_weights=0 if stream else wpack.size)
    out = sim.mem.read(Space.HOST, out_addr, conv.out_h * conv.out_w * conv.cout)
    return out.reshape(conv.out_shape), rep, lp


def assert_segments_bit_exact(model, segments, cfg, seed=0):
    """Each lowered segment on random int8 inputs equals the integer reference."""
    from edgec.targets.edge_npu import int_reference
    from edgec.targets.edge_npu.runtime import NpuDevice

    dev = NpuDevice(model, cfg)
    rng = np.random.default_rng(seed)
    for i, seg in enumerate(segments):
        ins = [rng.integers(-128, 128, seg.shapes[v]).astype(np.int8) for v in seg.inputs]
        for got, want in zip(dev.run_segment(i, ins), int_reference.run_segment(seg, ins)):
            assert got.dtype == np.int8
            np.testing.assert_array_equal(got, want, err_msg=seg.name)
