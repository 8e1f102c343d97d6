"""Queue timing, double buffering, deadlock and token misuse."""

from __future__ import annotations

import math

import pytest
from edgec.targets.edge_npu import isa
from edgec.targets.edge_npu.isa import Op, Space, make
from edgec.targets.edge_npu.semantics import SimError
from edgec.targets.edge_npu.simulator import Simulator, simulate

END = make(Op.END)


def _load(deps=("push_next",)):
    return make(Op.LOAD, deps, kind=isa.Kind.ACT, space=Space.HOST, rows=1, cols=1, depth=400,
                stride=400)


def test_deadlock_is_reported(small):
    prog = [make(Op.CFG, ("pop_prev",)), END]  # nothing will ever push load->compute
    with pytest.raises(SimError, match="deadlock: compute queue at #0 CFG waits for a token "
                                       "from load"):
        simulate(small, prog)


def test_unconsumed_token_is_misuse(small):
    with pytest.raises(SimError, match=r"token misuse.*#1 END.*load->compute"):
        simulate(small, [_load(), END])


def test_dma_overlaps_compute(small):
    """Two independent loads and GEMMs: the makespan is less than the sum of parts."""
    cfgi = make(Op.CFG, kh=1, kw=1, kc=16, cin=16, in_w=25, out_w=25, stride=1,
                wgt_stride=16, acc_stride=16)
    gemm = make(Op.GEMM, ("pop_prev",), m_len=25, k_len=16, n_len=16, reset=1)
    prog = [_load(), cfgi, gemm, _load(), make(Op.GEMM, ("pop_prev",), m_len=25, k_len=16,
                                                  n_len=16), END]
    rep = simulate(small, prog)
    assert rep.cycles < rep.busy["load"] + rep.busy["compute"]
    assert rep.cycles >= max(rep.busy.values())


def test_sync_charges_layer_launch(small):
    rep = simulate(small, [make(Op.SYNC), make(Op.SYNC), END])
    assert rep.cycles == 2 * small.layer_launch_cycles


def test_out_of_range_access(small):
    prog = [make(Op.LOAD, kind=isa.Kind.ACT, space=Space.HOST, rows=1, cols=1, depth=2000,
                 stride=0, sram=small.activation_bytes - 10), END]
    with pytest.raises(SimError, match=r"#0 LOAD: inp\["):
        Simulator(small).run(prog)



@pytest.mark.parametrize("conv", [(32, 32, 64, 256, 1), (16, 16, 256, 256, 3)],
                         ids=["1x1_4tiles", "3x3_K2304_two_descriptors_per_tile"])
def test_streamed_weights_overlap_compute(npu, conv):
    """Compute-bound layers (soc link) with streamed weights pay only the first N-tile's
    DMA over the cached run: tile t+1 streams while tile t computes."""
    from edgec.targets.edge_npu import programs, timing

    h, w, cin, cout, k = conv
    conv = programs.Conv(h, w, cin, cout, k, k, 1, ((k - 1) // 2,) * 4)
    cfg = npu.with_link("soc")
    cycles = {}
    for stream_from in (None, 1 << 24):
        place = programs.Placement(inp=(Space.HOST, 0), out=(Space.HOST, 1 << 20), wgt=0,
                                   params=0, stream_from=stream_from)
        lp = programs.conv2d_layer(cfg, conv, place, "ws")
        cycles[stream_from is not None] = simulate(cfg, lp.instrs + programs.end()).cycles
    loads = [i for i in lp.instrs if i.op == Op.LOAD and i.kind == isa.Kind.WGT]
    per_tile = math.ceil(k * k * cin / 2047)  # descriptors per N-tile (11-bit rows)
    assert len(loads) == per_tile * cout // 64
    first = sum(timing.dma_cycles(cfg, i) for i in loads[:per_tile])
    serial = sum(timing.dma_cycles(cfg, i) for i in loads)
    assert cycles[False] < cycles[True] <= cycles[False] + first < cycles[False] + serial
