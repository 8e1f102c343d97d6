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


# -- the vector queue: VECs overlap the array, with hazard checks ---------------------------
def _cfgi():
    return make(Op.CFG, kh=1, kw=1, kc=16, cin=16, in_w=25, out_w=25, stride=1,
                wgt_stride=16, acc_stride=16)


def _gemm(acc, deps=()):
    return make(Op.GEMM, deps, m_len=25, k_len=16, n_len=16, reset=1, acc=acc)


def _requant(src, dst, deps=()):
    return make(Op.VEC, deps, vop=isa.VecOp.REQUANT, src=src, dst=dst, count=400, cols=16)


def _trace(cfg, prog):
    tr = []
    Simulator(cfg, functional=False, trace=tr).run(prog)
    return {idx: (unit, a, b) for idx, unit, a, b in tr}


def _queue(cfg, depth):
    import dataclasses

    return dataclasses.replace(cfg, vector_queue=depth)


def test_vec_overlaps_a_gemm_on_other_accumulators(small):
    """Requantizing tile 0 while the array fills the other accumulators for tile 1."""
    prog = [_cfgi(), _gemm(0), _requant(0, 1000), _gemm(400), _requant(400, 1400), END]
    tr = _trace(small, prog)
    assert tr[2][0] == "vector" and tr[3][1] < tr[2][2]  # GEMM 1 starts before VEC 0 ends
    serial = _trace(_queue(small, 0), prog)
    assert serial[3][1] >= serial[2][2]                  # without a queue it waits
    assert max(b for _, _, b in tr.values()) < max(b for _, _, b in serial.values())


def test_gemm_waits_for_a_vec_reading_its_accumulators(small):
    """Write after read: the next GEMM overwrites acc[0:400) that the VEC still reads."""
    tr = _trace(small, [_cfgi(), _gemm(0), _requant(0, 1000), _gemm(0), END])
    assert tr[3][1] >= tr[2][2]


def test_gemm_waits_for_a_vec_writing_its_input(small):
    """Read after write: the GEMM's im2col reads the rows the VEC writes."""
    tr = _trace(small, [_cfgi(), _gemm(0), _requant(0, 16 * 25 * 5), _gemm(400), END])
    assert tr[3][1] < tr[2][2]  # output beyond the 25 x 16 input rows: no hazard
    tr = _trace(small, [_cfgi(), _gemm(0), _requant(0, 16), _gemm(400), END])
    assert tr[3][1] >= tr[2][2]


def test_compute_tokens_wait_for_earlier_vecs(small):
    """A token from a CFG after a VEC still means the VEC's output is there."""
    store = make(Op.STORE, ("pop_prev",), space=Space.HOST, rows=1, cols=1, depth=400,
                 sram=1000)
    tr = _trace(small, [_cfgi(), _gemm(0), _requant(0, 1000),
                        make(Op.CFG, ("push_next",)), store, END])
    assert tr[4][1] >= tr[2][2]


def test_full_vector_queue_holds_the_compute_queue(small):
    """Depth 1: a VEC is dispatched only once the one before it has started running, so
    the GEMM after three VECs waits for the second to finish; depth 4 lets it go."""
    prog = [_cfgi(), _gemm(0), _requant(0, 1000), _requant(0, 2000), _requant(0, 3000),
            _gemm(400), END]
    deep, shallow = _trace(small, prog), _trace(_queue(small, 1), prog)
    assert deep[5][1] < deep[2][2]
    assert shallow[5][1] >= shallow[2][2]


def test_bad_vector_queue_is_refused():
    import json

    from edgec.errors import EdgecError
    from edgec.targets.edge_npu.config import CONFIG_DIR, parse_config

    data = json.loads((CONFIG_DIR / "edge-npu.json").read_text())
    data["vector"]["queue"] = -1
    with pytest.raises(EdgecError, match="vector.queue.*non-negative"):
        parse_config(data, "x.json")


# -- race checking: a result must not depend on the timing model's order ---------------------
def _racy(tokens: bool):
    """Load 400 bytes into inp[0:400], store them: ordered only if the load pushes a
    token the compute queue passes on to the store."""
    load = make(Op.LOAD, ("push_next",) if tokens else (), kind=isa.Kind.ACT,
                space=Space.HOST, rows=1, cols=1, depth=400, stride=400)
    relay = [make(Op.CFG, ("pop_prev", "push_next"))] if tokens else []
    store = make(Op.STORE, ("pop_prev",) if tokens else (), space=Space.HOST, dram=4096,
                 rows=1, cols=1, depth=400, stride=400)
    return [load, *relay, store, END]


def test_unordered_accesses_are_a_race(small):
    from edgec.targets.edge_npu.races import RaceError

    with pytest.raises(RaceError, match=r"race: instruction #[01] (STORE|LOAD) touches "
                                        r"inp\[0\], which instruction #[01] on the "
                                        r"(load|store) unit (wrote|read)"):
        Simulator(small).run(_racy(tokens=False))
    Simulator(small).run(_racy(tokens=True))
    Simulator(small, check_races=False).run(_racy(tokens=False))  # timing-only order


def test_vec_and_gemm_ordered_by_the_hazard_unit_are_not_a_race(small):
    """GEMM 2 overwrites the accumulators VEC 1 reads: the hazard wait orders them. A
    VEC that writes the bytes a later LOAD fills with no token between them is a race."""
    from edgec.targets.edge_npu.races import RaceError

    prog = [_cfgi(), _gemm(0), _requant(0, 1000), _gemm(0), _requant(0, 1400), END]
    Simulator(small).run(prog)
    late = make(Op.LOAD, kind=isa.Kind.ACT, space=Space.HOST, sram=1000, rows=1, cols=1,
                depth=16, stride=16)
    with pytest.raises(RaceError, match=r"race: instruction #[23] (VEC|LOAD) touches "
                                        r"inp\[1000\]"):
        Simulator(small).run([_cfgi(), _gemm(0), _requant(0, 1000), late, END])


def test_store_pitch_scatters_pixels_and_costs_a_cycle_each(small):
    """STORE rows=2 cols=3 depth=4 pitch=10 stride=40: pixel (r, c) of the dense SRAM
    block lands at r*40 + c*10; on chip that is 6 runs, so at least 6 cycles where the
    24 bytes alone would take fewer; without a pitch the rows abut and cost the bytes."""
    import numpy as np

    sim = Simulator(small, host_bytes=256)
    sim.mem.inp[:24] = np.arange(1, 25, dtype=np.int8)
    store = make(Op.STORE, space=Space.PCACHE, dram=1000, sram=0, rows=2, cols=3, depth=4,
                 stride=40, pitch=10)
    sim.run([store, END])
    got = sim.mem.read(Space.PCACHE, 1000, 80).astype(int)
    want = np.zeros(80, dtype=int)
    for r in range(2):
        for c in range(3):
            px = 12 * r + 4 * c
            want[40 * r + 10 * c:40 * r + 10 * c + 4] = np.arange(px + 1, px + 5)
    np.testing.assert_array_equal(got, want)
    dense = make(Op.STORE, space=Space.PCACHE, sram=0, rows=2, cols=3, depth=4, stride=12)
    t = {name: simulate(small, [ins, END]).cycles for name, ins in
         (("scatter", store), ("dense", dense))}
    by_bytes = math.ceil(24 / small.feed_activations)
    assert by_bytes < 6
    assert t == {"scatter": small.dma_descriptor_cycles + 6,
                 "dense": small.dma_descriptor_cycles + by_bytes}
    with pytest.raises(SimError, match="pitch 2 is less than"):
        Simulator(small).run([make(Op.STORE, space=Space.PCACHE, rows=1, cols=2, depth=4,
                                   pitch=2), END])


def test_vec_broadcast_operand_repeats_one_pixel(small):
    """MUL with ``cols`` = 4 reads one 4-channel pixel at src2 for each of the 3 pixels
    at src, as a full 12-element operand holding 3 copies of it would; a count that is
    not whole pixels is refused."""
    import numpy as np
    from edgec.targets.edge_npu import rounding
    from edgec.targets.edge_npu.isa import MUL_KEYS, VecOp, keyed_block

    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, 12).astype(np.int8)
    s = rng.integers(-128, 128, 4).astype(np.int8)
    mult, shift = rounding.mul_params(0.05, 0.01, 0.02, rounding.Rounding.BINARY32)
    block = keyed_block(MUL_KEYS, zp1=3, zp2=-9, mult=mult, shift=shift, zp_out=-2,
                        qmin=-128, qmax=127)

    def run(src2, cols, operand):
        sim = Simulator(small, host_bytes=256)
        sim.mem.inp[:12] = x
        sim.mem.inp[100:100 + operand.size] = operand
        sim.mem.write(Space.PCACHE, 0, np.asarray(block, dtype=np.int32))
        sim.run([make(Op.VEC, vop=VecOp.MUL, src=0, src2=src2, dst=200, count=12,
                      cols=cols, param=0, rnd=1), END])
        return sim.mem.inp[200:212].copy()

    np.testing.assert_array_equal(run(100, 4, s), run(100, 0, np.tile(s, 3)))
    with pytest.raises(SimError, match="not whole pixels"):
        run(100, 5, s)


def _xfer_in(n, host=0, pcache=8192, deps=("push_next",)):
    return make(Op.XFER, deps, to_host=0, host=host, pcache=pcache, bytes=n)


def test_xfer_streams_the_link_beside_the_load_queue(small):
    """Rows in over the host queue: each XFER hands the load queue a token, the load
    queue's on-chip LOAD of them waits for it, and the link's time overlaps that work
    (the same bytes as host LOADs hold the load queue for the whole transfer)."""
    import numpy as np

    n, parts = 4096, 4
    sim = Simulator(small, host_bytes=1 << 16)
    data = np.arange(n * parts, dtype=np.int64).astype(np.int8)
    sim.mem.write(Space.HOST, 0, data)
    prog = [_xfer_in(n, i * n, 8192 + i * n) for i in range(parts)]
    for i in range(parts):
        prog.append(make(Op.LOAD, ("pop_prev",), kind=isa.Kind.ACT, space=Space.PCACHE,
                         dram=8192 + i * n, sram=0, rows=4, cols=1, depth=n // 4,
                         stride=n // 4))
    rep = sim.run([*prog, END])
    np.testing.assert_array_equal(sim.mem.read(Space.PCACHE, 8192, n * parts), data)
    assert rep.host_in == n * parts
    link = parts * (small.dma_descriptor_cycles + math.ceil(n / small.host_bytes_per_cycle))
    assert rep.busy["host"] == link
    # the last LOAD waits for the last XFER only: the load queue's work hides in the link's
    on_chip = small.dma_descriptor_cycles + math.ceil(n / small.feed_activations)
    assert rep.cycles == link + on_chip


def test_xfer_out_waits_for_the_store_token(small):
    """An XFER out of rows a STORE writes: ordered by the store queue's token, it is race
    free and carries the bytes; without the token it is a race."""
    import numpy as np
    from edgec.targets.edge_npu.races import RaceError

    def prog(token):
        return [make(Op.LOAD, ("push_next",), kind=isa.Kind.ACT, space=Space.PCACHE,
                     dram=0, rows=1, cols=1, depth=64, stride=64),
                make(Op.CFG, ("pop_prev", "push_next")),
                make(Op.STORE, ("pop_prev",) + (("push_next",) if token else ()),
                     space=Space.PCACHE, dram=4096, rows=1, cols=1, depth=64, stride=64),
                make(Op.XFER, ("pop_prev",) if token else (), to_host=1, host=256,
                     pcache=4096, bytes=64), END]

    sim = Simulator(small, host_bytes=1 << 12)
    sim.mem.write(Space.PCACHE, 0, np.arange(64, dtype=np.int8))
    rep = sim.run(prog(True))
    np.testing.assert_array_equal(sim.mem.read(Space.HOST, 256, 64), np.arange(64))
    assert rep.host_out == 64
    with pytest.raises(RaceError, match=r"#[23] (XFER|STORE) touches pcache\[4096\]"):
        Simulator(small, host_bytes=1 << 12).run(prog(False))


def test_xfer_and_host_dmas_do_not_share_a_section(small):
    with pytest.raises(SimError, match="XFERs and LOAD / STORE over the host link"):
        simulate(small, [_xfer_in(64, deps=()), make(Op.LOAD, kind=isa.Kind.ACT,
                                                    space=Space.HOST, rows=1, cols=1,
                                                    depth=64, stride=64), END])
