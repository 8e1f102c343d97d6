"""Cascades: a chain of convs run band by band in one program (``cascade``)."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
from edgec.targets.edge_npu import cascade, programs
from edgec.targets.edge_npu import lower as lower_module
from edgec.targets.edge_npu.isa import Instr, Op, Space
from edgec.targets.edge_npu.layers import Layer, QTensor
from edgec.targets.edge_npu.lower import SegLayer, Segment, lower
from edgec.targets.edge_npu.programs import Conv, Placement
from edgec.targets.edge_npu.races import RaceError
from edgec.targets.edge_npu.report import _cascade_lines
from edgec.targets.edge_npu.simulator import Simulator, simulate

from .conftest import assert_segments_bit_exact

OUT = 1 << 21


def _chain(h: int) -> list[Conv]:
    """A MobileNet-like stem: 3x3 s2, depthwise, pointwise, depthwise s2, pointwise."""
    return [Conv(h, h, 3, 16, 3, 3, 2, (1, 1, 1, 1)),
            Conv(h // 2, h // 2, 16, 16, 3, 3, 1, (1, 1, 1, 1), depthwise=True),
            Conv(h // 2, h // 2, 16, 32),
            Conv(h // 2, h // 2, 32, 32, 3, 3, 2, (1, 1, 1, 1), depthwise=True),
            Conv(h // 4, h // 4, 32, 48)]


def _machine(cfg, convs, seed=0):
    """A simulator holding random weights, requant blocks and an input image on the host;
    each conv's placement (intermediates in PCACHE scratch, the last output on the
    host)."""
    rng = np.random.default_rng(seed)
    sim = Simulator(cfg, host_bytes=1 << 22)
    c0 = convs[0]
    sim.mem.write(Space.HOST, 0, rng.integers(-128, 128, (c0.h, c0.w, c0.cin)).astype(np.int8))
    pc, places, inp = 0, [], (Space.HOST, 0)
    blobs = []
    for c in convs:
        shape = (c.cout, c.kh, c.kw) if c.depthwise else (c.cout, c.kh, c.kw, c.cin)
        w = programs.pack_weights(c, rng.integers(-128, 128, shape).astype(np.int8), cfg.cols)
        pp = programs.pack_requant(c, rng.integers(-2000, 2000, c.cout).astype(np.int32),
                                   np.full(c.cout, 1 << 30, np.int64),
                                   np.full(c.cout, 9, np.int64), 3, -128, 127, cfg.cols)
        blobs.append((pp, w))
    scratch = sum(programs.align(pp.nbytes) + programs.align(w.nbytes) for pp, w in blobs)
    for i, (c, (pp, w)) in enumerate(zip(convs, blobs)):
        sim.mem.write(Space.PCACHE, pc, pp)
        params, pc = pc, pc + programs.align(pp.nbytes)
        sim.mem.write(Space.PCACHE, pc, w)
        wgt, pc = pc, pc + programs.align(w.nbytes)
        if i == len(convs) - 1:
            out = (Space.HOST, OUT)
        else:
            out = (Space.PCACHE, scratch)
            scratch += programs.align(int(np.prod(c.out_shape)))
        places.append(Placement(inp=inp, out=out, wgt=wgt, params=params, zp_in=-5))
        inp = out
    return sim, places


def _run(cfg, convs, program):
    sim, _ = _machine(cfg, convs)
    rep = sim.run(program + programs.end())
    return sim.mem.read(Space.HOST, OUT, int(np.prod(convs[-1].out_shape))), rep


def _one_by_one(cfg, convs):
    """The chain's members at ``_machine``'s places, and the output and report of its
    layers' own programs run one by one."""
    _, places = _machine(cfg, convs)
    members = [cascade.Member(c, p) for c, p in zip(convs, places)]
    alone = [ins for m in members for ins in programs.conv2d_layer(cfg, m.conv, m.place).instrs]
    want, rep = _run(cfg, convs, alone)
    return members, want, rep


@pytest.mark.parametrize("h, min_bands, buffers", [(32, 1, 2), (64, 4, 2), (64, 8, 2),
                                                   (64, 4, 4), (64, 8, 8)])
def test_cascade_is_bit_exact_and_race_free(small, h, min_bands, buffers):
    """The race checker runs in both simulations: every load of a row another conv stores
    is ordered after that store by the step protocol's tokens. (More buffers are not
    faster on every chain: ``lower`` keeps the fastest.)"""
    convs = _chain(h)
    members, want, rep_alone = _one_by_one(small, convs)
    together = cascade.cascade_program(small, members, None, min_bands, buffers)
    got, rep = _run(small, convs, together)
    np.testing.assert_array_equal(got, want)
    assert rep.macs == rep_alone.macs
    queues, order = cascade.cascade_queues(small, members, min_bands, buffers)
    assert sum(1 for i in together if i.op == Op.SYNC) == 1
    assert len(order) >= sum(q.bands for q in queues)
    if min_bands > 1:
        assert min(q.bands for q in queues) >= 2
    if min_bands > 1 and buffers == 2:
        assert rep.cycles < rep_alone.cycles


@pytest.mark.parametrize("buffers, min_bands", [(2, 4), (4, 8)])
def test_a_shorter_distance_is_a_race(small, monkeypatch, buffers, min_bands):
    """2V - 1 steps from a store to a load that reads it is too few: the race checker
    refuses the program (so 2V is not an untested constant)."""
    convs = _chain(64)
    _, places = _machine(small, convs)
    monkeypatch.setattr(cascade, "distance", lambda buffers: 2 * buffers - 1)
    prog = cascade.cascade_program(small, [cascade.Member(c, p) for c, p in
                                           zip(convs, places)], None, min_bands, buffers)
    with pytest.raises(RaceError, match="pcache"):
        _run(small, convs, prog)


def test_schedule_keeps_the_distance_and_every_step():
    steps = [6, 6, 3]
    deps = [[], [0, 1, 2, 3, 4, 5], [1, 3, 5]]
    order = cascade.schedule(steps, deps, 4)
    where = {s: g for g, s in enumerate(order) if s[0] != cascade.BUBBLE}
    assert sorted(where) == [(i, b) for i, n in enumerate(steps) for b in range(n)]
    for i in (1, 2):
        for b, d in enumerate(deps[i]):
            assert where[(i - 1, d)] + 4 <= where[(i, b)]
            if b:
                assert where[(i, b - 1)] < where[(i, b)]
    # the last step of member 2 waits 4 slots on member 1's last, no more: bubbles fill
    # the slots nothing else may take
    assert order[-1] == (2, 2) and len(order) - 1 == where[(1, 5)] + 4
    assert (cascade.BUBBLE, 0) in order


def test_schedule_lets_the_deepest_ready_member_go():
    """When several members may go, the deepest does: member 1's bands all read member
    0's first step, so they all go before member 0's others (taking turns instead, as
    the member that went longest ago would, leaves more of the chain's end to run after
    the first member's last band)."""
    order = cascade.schedule([6, 6], [[], [0] * 6], 1)
    assert order == [(0, 0)] + [(1, b) for b in range(6)] + [(0, b) for b in range(1, 6)]


def test_needs_maps_bands_to_the_producer_step():
    c = Conv(16, 16, 8, 8, 3, 3, 2, (1, 1, 1, 1))  # 8 output rows from 16 input rows
    # two output rows per band read input rows up to 4b + 3; the producer stores 4 a step
    assert cascade.needs(4, c, 2) == [0, 1, 2, 3]
    assert cascade.needs(16, c, 8) == [0]


def test_one_bank_layout_fits_every_member(small):
    convs = _chain(64)
    _, places = _machine(small, convs)
    members = [cascade.Member(c, p) for c, p in zip(convs, places)]
    rows, reserve = cascade.band_rows(small, members, [c.on_array().out_h for c in convs])
    for c, r in zip(convs, rows):
        a = c.on_array()
        tiles = programs.n_tiles(a, small.cols)
        assert reserve + min(r, a.out_h) * a.out_w * sum(n for _, n in tiles) <= \
            small.activation_bank


def test_a_broken_chain_is_refused(small):
    convs = _chain(32)
    _, places = _machine(small, convs)
    with pytest.raises(programs.ProgramError, match="does not read"):
        cascade.cascade_program(small, [cascade.Member(convs[0], places[0]),
                                        cascade.Member(convs[3], places[3])])


def _conv_layer(rng, conv, zp_in):
    shape = (conv.cout, conv.kh, conv.kw) if conv.depthwise else (conv.cout, conv.kh,
                                                                   conv.kw, conv.cin)
    return Layer("conv", [QTensor((conv.h, conv.w, conv.cin), 0.02, zp_in)],
                 QTensor(conv.out_shape, 0.05, -3),
                 {"conv": conv, "zp_out": -3, "qmin": -128, "qmax": 127},
                 {"weights": rng.integers(-127, 128, shape).astype(np.int8),
                  "bias": rng.integers(-5000, 5000, conv.cout),
                  "mult": np.full(conv.cout, 1 << 30), "shift": np.full(conv.cout, -8)})


def test_lowering_cascades_a_chain_when_faster(small):
    """``lower`` runs the chain as a cascade (the report names it), bit-exact with the
    integer reference, in fewer cycles than ``cascades=False``."""
    rng = np.random.default_rng(5)
    convs = _chain(64)
    layers = [_conv_layer(rng, c, 4 if i == 0 else -3) for i, c in enumerate(convs)]
    names = ["x"] + [f"t{i}" for i in range(len(convs) - 1)] + ["y"]
    seg_layers = [SegLayer(f"c{i}", ly, [names[i]], names[i + 1]) for i, ly in enumerate(layers)]

    def segment():
        shapes = {n: (1, t.shape[2], t.shape[0], t.shape[1]) for n, t in
                  zip(names, [layers[0].inputs[0]] + [ly.out for ly in layers])}
        tensors = dict(zip(names, [layers[0].inputs[0]] + [ly.out for ly in layers]))
        return Segment("s", ["x"], ["y"], list(seg_layers), shapes, tensors)

    cycles = {}
    for on in (True, False):
        seg = segment()
        model = lower(small, [seg], cascades=on)
        assert_segments_bit_exact(model, [seg], small)
        cycles[on] = simulate(small, model.segments[0].program).cycles
        groups = {ly["cascade"]["name"] for ly in model.segments[0].layers if "cascade" in ly}
        assert bool(groups) == on
    assert cycles[True] < cycles[False]


@pytest.mark.parametrize("buffers, rows", [(2, 4), (4, 2), (8, 4)])
def test_a_copy_first_stages_the_host_input(small, buffers, rows):
    """A ``Copy`` of the host image into the parameter cache, cascaded before the chain
    that then reads it there: bit-exact and race free."""
    convs = _chain(64)
    sim, places = _machine(small, convs)
    c0 = convs[0]
    stage, clamp = 200_000, 199_936
    places[0] = replace(places[0], inp=(Space.PCACHE, stage))
    copy = cascade.Copy(c0.h, c0.w, c0.cin, (Space.HOST, 0), (Space.PCACHE, stage), clamp, rows)
    members = [copy] + [cascade.Member(c, p) for c, p in zip(convs, places)]
    prog = cascade.cascade_program(small, members, None, 4, buffers)
    assert any(i.op == Op.VEC and i.param == clamp for i in prog)
    want, _ = _run(small, convs, [ins for c, p in zip(convs, _machine(small, convs)[1])
                                  for ins in programs.conv2d_layer(small, c, p).instrs])
    sim, _ = _machine(small, convs)
    sim.mem.write(Space.PCACHE, clamp, np.array([-128, 127], np.int32))
    sim.run(prog + programs.end())
    got = sim.mem.read(Space.HOST, OUT, int(np.prod(convs[-1].out_shape)))
    np.testing.assert_array_equal(got, want)


def _six_convs(hw: int = 48):
    """Six hw x hw x 32 convs; at 48 their buffers, all alive at once, overflow
    edge-npu-s's parameter cache."""
    rng = np.random.default_rng(5)
    convs = [Conv(hw, hw, 3, 32, 3, 3, 1, (1, 1, 1, 1))] + [Conv(hw, hw, 32, 32)] * 5
    layers = [_conv_layer(rng, c, 4 if i == 0 else -3) for i, c in enumerate(convs)]
    names = ["x"] + [f"t{i}" for i in range(len(convs) - 1)] + ["y"]
    tensors = [layers[0].inputs[0]] + [ly.out for ly in layers]
    return Segment("s", ["x"], ["y"],
                   [SegLayer(f"c{i}", ly, [names[i]], names[i + 1])
                    for i, ly in enumerate(layers)],
                   {n: (1, t.shape[2], t.shape[0], t.shape[1]) for n, t in zip(names, tensors)},
                   dict(zip(names, tensors)))


def _groups(model) -> list[list[str]]:
    """The layer names of each cascade of the model's first segment."""
    groups: dict[str, list[str]] = {}
    for ly in model.segments[0].layers:
        if "cascade" in ly:
            groups.setdefault(ly["cascade"]["name"], []).append(ly["name"])
    return list(groups.values())


def test_a_chain_too_large_to_keep_alive_is_cascaded_in_part(small):
    """Without rings ``lower`` cascades the longest start of the chain whose buffers fit
    alive (four convs; halving the chain found three); with them (the default) all six
    run as one cascade, their intermediates through rings. Both bit-exact."""
    seg = _six_convs()
    alive = sum(seg.tensors[v].size for v in ["t0", "t1", "t2", "t3", "t4"])
    assert alive > small.parameter_cache
    model = lower(small, [seg], rings=False)
    assert_segments_bit_exact(model, [seg], small)
    assert _groups(model) == [["c0", "c1", "c2", "c3"]]
    seg = _six_convs()
    ringed = lower(small, [seg])
    assert_segments_bit_exact(ringed, [seg], small)
    assert _groups(ringed) == [[f"c{i}" for i in range(6)]]
    assert ringed.segments[0].layers[0]["cascade"]["rings"] == 5
    assert (simulate(small, ringed.segments[0].program).cycles
            < simulate(small, model.segments[0].program).cycles)
    line = _cascade_lines(ringed.segments[0].layers)[1]
    assert "c0 .. c5 (6 layers)" in line and "5 intermediates through row rings" in line


@pytest.mark.parametrize("spans", [[(0, 2, True)], [(0, 1, True), (3, 5, True)],
                                   [(1, 4, True)]])
def test_a_second_pass_runs_each_ringed_span_as_one_cascade(small, spans):
    """``lower``'s second pass: each ringed span is exactly one cascade, and the layers
    between them run alone from buffers of their own; bit-exact."""
    seg = _six_convs()
    model, picks = lower_module._lower(small, [seg], None, None, True, True, True, True,
                                       fixed={0: spans})
    assert picks is None
    assert_segments_bit_exact(model, [seg], small)
    assert _groups(model) == [[f"c{i}" for i in range(a, z + 1)] for a, z, _ in spans]


def test_a_ringed_cascade_that_does_not_come_out_falls_back(small, monkeypatch):
    """If a ringed span's cascade cannot be built in the second pass, ``lower`` lowers
    the chain without rings (the first pass's model, whose ringed intermediates have no
    buffers of their own, is never the result)."""
    real = lower_module.cascade_program

    def no_rings(cfg, members, *args):
        if any(getattr(m, "ring", 0) for m in members):
            raise programs.ProgramError("no rings")
        return real(cfg, members, *args)

    seg = _six_convs()
    model, picks = lower_module._lower(small, [seg], None, None, True, True, True, True)
    assert picks == {0: [(0, 5, True)]}
    monkeypatch.setattr(lower_module, "cascade_program", no_rings)
    seg = _six_convs()
    with pytest.raises(lower_module._RingFailed):
        lower_module._lower(small, [seg], None, None, True, True, True, True, fixed=picks)
    seg = _six_convs()
    model = lower(small, [seg])
    assert_segments_bit_exact(model, [seg], small)
    assert _groups(model) == [["c0", "c1", "c2", "c3"]]


def test_a_chain_that_must_shrink_does_not_shrink_the_next(small):
    """The six-conv chain above, then a second chain of two small convs branching off
    its fourth output: without rings the first is cut to what fits, and the second,
    which fits beside it, is kept whole (cutting every chain at once left it one conv,
    no cascade). With rings the first is whole too; its fourth output, which the second
    also reads, stays whole."""
    rng = np.random.default_rng(6)
    convs = [Conv(48, 48, 3, 32, 3, 3, 1, (1, 1, 1, 1))] + [Conv(48, 48, 32, 32)] * 5 + [
        Conv(48, 48, 32, 8, 3, 3, 2, (1, 1, 1, 1)), Conv(24, 24, 8, 8, 3, 3, 1, (1, 1, 1, 1))]
    layers = [_conv_layer(rng, c, 4 if i == 0 else -3) for i, c in enumerate(convs)]
    names = ["x"] + [f"t{i}" for i in range(5)] + ["y", "u", "z"]
    ins = names[:6] + ["t3", "u"]
    outs = names[1:7] + ["u", "z"]
    tensors = dict(zip(["x", *outs], [layers[0].inputs[0]] + [ly.out for ly in layers]))
    seg = Segment("s", ["x"], ["y", "z"],
                  [SegLayer(f"c{i}", ly, [a], o) for i, (ly, a, o) in
                   enumerate(zip(layers, ins, outs))],
                  {n: (1, t.shape[2], t.shape[0], t.shape[1]) for n, t in tensors.items()},
                  tensors)
    model = lower(small, [seg], rings=False)
    assert_segments_bit_exact(model, [seg], small)
    groups = _groups(model)
    assert ["c6", "c7"] in groups
    assert len(groups) == 2 and not any("c5" in g for g in groups)
    ringed = lower(small, [seg])
    assert_segments_bit_exact(ringed, [seg], small)
    assert _groups(ringed) == [[f"c{i}" for i in range(6)], ["c6", "c7"]]
    assert ringed.segments[0].layers[0]["cascade"]["rings"] == 4  # not t3


def _tail(h: int) -> list[Conv]:
    """DB's head: a 3x3 conv, then two stride-2 transposed convs (output phases), the
    last one's output on the host."""
    return [Conv(h, h, 16, 24, 3, 3, 1, (1, 1, 1, 1)),
            Conv(h, h, 24, 4 * 8, phases=2),
            Conv(2 * h, 2 * h, 8, 4 * 1, phases=2)]


@pytest.mark.parametrize("min_bands, buffers", [(4, 2), (8, 4)])
def test_transposed_convs_cascade(small, min_bands, buffers):
    """A transposed conv's step stores ``phases`` tensor rows per computed row, so the
    next conv's bands wait on the producer step that stores their rows, not the one that
    computes as many: bit-exact, race-free and faster than one by one."""
    convs = _tail(16)
    members, want, rep_alone = _one_by_one(small, convs)
    together = cascade.cascade_program(small, members, None, min_bands, buffers)
    got, rep = _run(small, convs, together)
    np.testing.assert_array_equal(got, want)
    if buffers == 2:
        assert rep.cycles < rep_alone.cycles
    queues, _ = cascade.cascade_queues(small, members, min_bands, buffers)
    assert [q.bands for q in queues] == [min_bands] * 3


def test_transposed_producer_steps_count_tensor_rows(small):
    """Member 2 reads the 32-row output of member 1, whose 4 steps compute 4 rows each
    and store 8: its band b (8 input rows) waits on member 1's step b, not on step 2b + 1
    (which does not exist)."""
    convs = _tail(16)
    _, places = _machine(small, convs)
    members = [cascade.Member(c, p) for c, p in zip(convs, places)]
    _, order = cascade.cascade_queues(small, members, 4, 2)
    where = {s: g for g, s in enumerate(order)}
    for b in range(4):
        assert where[(2, b)] - where[(1, b)] >= cascade.distance(2)
        assert b == 0 or where[(2, b)] - where[(1, b - 1)] >= cascade.distance(2)


STAGE_IN, STAGE_OUT = 200_000, 240_000  # PCACHE staging, above _machine's scratch


def _linked(members, inp: bool, out: bool):
    """``members`` reading their input / storing their output through the staging areas,
    and the ``HostLink`` that moves them over the host queue."""
    first, last = members[0], members[-1]
    ms = list(members)
    if inp:
        ms[0] = replace(first, place=replace(first.place, inp=(Space.PCACHE, STAGE_IN)))
    if out:
        ms[-1] = replace(ms[-1], place=replace(last.place, out=(Space.PCACHE, STAGE_OUT)))
    return ms, cascade.HostLink((first.place.inp[1], STAGE_IN) if inp else None,
                                (STAGE_OUT, last.place.out[1]) if out else None)


@pytest.mark.parametrize("convs, min_bands, buffers", [
    (_chain(64), 4, 2), (_chain(64), 8, 4), (_tail(16), 8, 2), (_tail(16), 4, 4)],
    ids=["chain", "chain_4buf", "tail", "tail_4buf"])
def test_a_host_link_streams_over_the_host_queue(small, convs, min_bands, buffers):
    """The image comes in and the result goes out by XFERs on the host queue, each
    ordered by tokens against the loads that read its rows or the stores that wrote them:
    bit-exact against the layers one by one, race free, every byte over the link once,
    and faster than the same cascade whose first and last convs use the link
    themselves."""
    members, want, _ = _one_by_one(small, convs)
    ms, link = _linked(members, True, True)
    prog = cascade.cascade_program(small, ms, None, min_bands, buffers, link)
    got, rep = _run(small, convs, prog)
    np.testing.assert_array_equal(got, want)
    c0, cz = convs[0], convs[-1]
    assert rep.host_in == c0.h * c0.w * c0.cin and rep.host_out == int(np.prod(cz.out_shape))
    xfers = [i for i in prog if i.op == Op.XFER]
    assert xfers and sum(i.bytes for i in xfers) == rep.host_in + rep.host_out
    assert not any(i.op in (Op.LOAD, Op.STORE) and i.space == Space.HOST for i in prog)
    plain = cascade.cascade_program(small, members, None, min_bands, buffers)
    assert rep.cycles < _run(small, convs, plain)[1].cycles


def test_a_host_link_without_its_tokens_is_a_race(small, monkeypatch):
    """Without the token a band's first load pops, the load may read staged rows before
    their XFER has written them: the race checker refuses the program."""
    convs = _chain(64)
    _, places = _machine(small, convs)
    ms, link = _linked([cascade.Member(c, p) for c, p in zip(convs, places)], True, True)
    real = cascade._link_steps

    def tokenless(members, queues, link):  # the inbound XFERs lose their tokens
        xfers, edits = real(members, queues, link)
        return ([i if i.to_host else Instr(i.op, i.fields, frozenset()) for i in xfers],
                {k: e for k, e in edits.items() if not e.load})

    monkeypatch.setattr(cascade, "_link_steps", tokenless)
    prog = cascade.cascade_program(small, ms, None, 4, 2, link)
    with pytest.raises(RaceError, match="pcache"):
        _run(small, convs, prog)


def _ring_case(cfg, monkeypatch, convs, want, members, link, min_bands, tokens,
               xfer_flag: str, **edit_flags):
    """Run ``members`` as a cascade over the ring ``link``. With ``tokens``: bit-exact
    against ``want``, returns (program, report). Without: the XFERs lose ``xfer_flag`` and
    each step's edit ``edit_flags`` (the ring's slot tokens), and the race checker must
    refuse the program (returns None)."""
    if not tokens:
        real = cascade._link_steps

        def tokenless(members, queues, link):
            xfers, edits = real(members, queues, link)
            return ([Instr(i.op, i.fields, i.deps - {xfer_flag}) for i in xfers],
                    {k: replace(e, **edit_flags) for k, e in edits.items()})

        monkeypatch.setattr(cascade, "_link_steps", tokenless)
    prog = cascade.cascade_program(cfg, members, None, min_bands, 2, link)
    if not tokens:
        with pytest.raises(RaceError, match="pcache"):
            _run(cfg, convs, prog)
        return None
    got, rep = _run(cfg, convs, prog)
    np.testing.assert_array_equal(got, want)
    return prog, rep


@pytest.mark.parametrize("slots", [2, 3])
@pytest.mark.parametrize("tokens", [True, False])
def test_a_host_link_output_ring(small, slots, tokens, monkeypatch):
    """The output staged in a ring of ``slots`` step-sized slots: bit-exact, every byte
    out once, and a store into a slot waits for the XFER that emptied it; without that
    token the race checker refuses the program."""
    convs = _tail(16)
    members, want, _ = _one_by_one(small, convs)
    ms, link = _linked(members, True, True)
    h, w, ch = convs[-1].out_shape
    step = -(-h // 8) * w * ch  # 8 bands of the last conv (its rows x 2 phases)
    ring = replace(link, slots=slots, slot=step)
    ran = _ring_case(small, monkeypatch, convs, want, ms, ring, 8, tokens, "push_prev",
                     first_store=())
    if ran is None:
        return
    prog, rep = ran
    assert rep.host_out == h * w * ch
    outs = [i for i in prog if i.op == Op.XFER and i.to_host]
    assert len(outs) == 8 and {i.pcache for i in outs} == {STAGE_OUT + s * step
                                                           for s in range(slots)}


@pytest.mark.parametrize("slots, rows, band", [(2, 20, 4), (3, 9, 4), (2, 12, 2)])
@pytest.mark.parametrize("tokens", [True, False])
def test_a_host_link_input_ring(small, slots, rows, band, tokens, monkeypatch):
    """The input staged in a ring of ``slots`` slots of ``rows`` rows: bit-exact against
    the layers one by one, every input row over the link once plus the rows two runs of
    bands share, and an XFER into a slot waits for the last load of the run before it in
    that slot; without that token the race checker refuses the program."""
    convs = _chain(64)
    members, want, _ = _one_by_one(small, convs)
    ms, link = _linked(members, True, True)
    ms[0] = replace(ms[0], band_rows=band)
    ring = replace(link, in_slots=slots, in_rows=rows)
    ran = _ring_case(small, monkeypatch, convs, want, ms, ring, 4, tokens, "pop_next",
                     last_load=())
    if ran is None:
        return
    prog, rep = ran
    c0 = convs[0]
    row = c0.w * c0.cin
    los, his = cascade.rows_from(c0, band), cascade.rows_read(c0, band)
    runs = cascade.slot_runs(los, his, rows)
    assert len(runs) > slots  # the ring is reused
    assert rep.host_in == sum(his[b1] - los[b0] for b0, b1 in runs) * row
    ins = [i for i in prog if i.op == Op.XFER and not i.to_host]
    assert all(STAGE_IN <= i.pcache and i.pcache + i.bytes <= STAGE_IN + slots * rows * row
               for i in ins)


def _ringed(members, rows: list[int]):
    """``members`` with each output but the last through a ring of ``rows[i]`` rows."""
    return [replace(m, ring=r * m.out_shape[1] * m.out_shape[2]) if r else m
            for m, r in zip(members, [*rows, 0])]


@pytest.mark.parametrize("rows, min_bands, buffers", [((12, 12, 12, 12), 4, 2),
                                                      ((8, 16, 8, 32), 8, 2),
                                                      ((10, 0, 12, 0), 8, 4),
                                                      ((16, 16, 16, 16), 1, 2)])
@pytest.mark.parametrize("frees", [True, False])
def test_intermediates_through_row_rings(small, rows, min_bands, buffers, frees,
                                         monkeypatch):
    """Outputs through row rings a fraction of the tensor (``rows`` each, 0: whole):
    bit-exact against the layers one by one, no store leaves its ring, the loads that
    wrap are cut in two, and each store comes after the loads of the rows it overwrites.
    Without that order (``frees`` dropped) the race checker refuses the program."""
    convs = _chain(64)
    members, want, _ = _one_by_one(small, convs)
    ms = _ringed(members, list(rows))
    if not frees:
        monkeypatch.setattr(cascade, "_frees", lambda members, rows, rings:
                            [[] for _ in members])
    prog = cascade.cascade_program(small, ms, None, min_bands, buffers)
    if not frees:
        with pytest.raises(RaceError, match="pcache"):
            _run(small, convs, prog)
        return
    got, _ = _run(small, convs, prog)
    np.testing.assert_array_equal(got, want)
    queues, _ = cascade.cascade_queues(small, ms, min_bands, buffers)
    rings = cascade._rings(ms, [q.band_rows for q in queues])
    assert sorted(rings) == [i for i, r in enumerate(rows) if r]
    cut = 0
    for i, ring in rings.items():
        assert ring.rows <= rows[i] and ring.rows % (queues[i].band_rows * ms[i].phases) == 0
        h, w, ch = ms[i].out_shape
        top = ring.base + ring.rows * ring.row
        held = [ins for ins in prog if ins.op in (Op.LOAD, Op.STORE) and ins.rows
                and ins.space == Space.PCACHE and ring.base <= ins.dram < ring.base + h * w * ch]
        stores = [ins for ins in held if ins.op == Op.STORE]
        assert stores and all(ins.dram < top for ins in stores)
        loads = [ins for ins in held if ins.op == Op.LOAD]
        assert all(ins.dram + (ins.rows - 1) * ring.row < top for ins in loads)
        cut += sum(ins.dram == ring.base and ins.pad_top == 0 and not ins.deps & {
            "pop_prev", "pop_next"} for ins in loads)  # the second halves of cut loads
    assert cut


def test_a_ring_too_small_for_its_bands_is_refused(small):
    convs = _chain(64)
    members, _, _ = _one_by_one(small, convs)
    with pytest.raises(programs.ProgramError, match="ring"):
        cascade.cascade_program(small, _ringed(members, [3, 0, 0, 0]), None, 4, 2)
    with pytest.raises(programs.ProgramError, match="last member"):
        cascade.cascade_program(small, [*members[:-1], replace(members[-1], ring=4096)],
                                None, 4, 2)


def test_slot_runs_cover_every_band_once():
    """Runs are consecutive, cover every band, and each fits its slot; a band wider than a
    slot is refused."""
    c = _chain(64)[0]
    los, his = cascade.rows_from(c, 4), cascade.rows_read(c, 4)
    assert los[:3] == [0, 7, 15] and his[:3] == [8, 16, 24]
    runs = cascade.slot_runs(los, his, 20)
    assert runs[0] == (0, 1) and runs[-1][1] == len(his) - 1
    assert all(b == a1 + 1 for (_, a1), (b, _) in pairwise(runs))
    assert all(his[b1] - los[b0] <= 20 for b0, b1 in runs)
    with pytest.raises(programs.ProgramError, match="input ring slot"):
        cascade.slot_runs(los, his, 8)


def test_lower_rings_the_output_when_it_does_not_fit_the_staging_area(small):
    """``lower._linked``: a staging area too small for the whole output (with the input
    beside it) but large enough for the ring gives a ring link; the cascade it runs is
    bit-exact. Smaller than the ring: no link."""
    from edgec.targets.edge_npu import lower as lw

    convs = _tail(32)
    members, want, _ = _one_by_one(small, convs)
    c0 = convs[0]
    inp = programs.align(c0.h * c0.w * c0.cin)
    ring = lw._ring_bytes(convs[-1])
    out = int(np.prod(convs[-1].out_shape))
    assert ring < out
    ms, link = lw._linked(members, (STAGE_IN, 0, inp + ring))
    assert link.slots == lw.CASCADE_RING_SLOTS and link.slots * link.slot == ring
    assert link.inp == (0, STAGE_IN) and link.out == (STAGE_IN + inp, OUT)
    assert lw._linked(members, (STAGE_IN, 0, inp + ring - 1)) is None
    assert lw._linked(members, (STAGE_IN, 0, inp + out))[1].slots == 0
    prog = cascade.cascade_program(small, ms, None, lw.CASCADE_HOST_BANDS, 2, link)
    got, rep = _run(small, convs, prog)
    np.testing.assert_array_equal(got, want)
    assert rep.host_out == out


def test_lower_rings_the_input_when_it_does_not_fit_the_staging_area(small):
    """``lower._linked``: an input too large to stage whole comes through the input ring,
    and its cascade (the first conv in 4-row bands) is bit-exact against the layers one
    by one; a staging area smaller than the ring gives no link."""
    from edgec.targets.edge_npu import lower as lw

    convs = _chain(100)
    _, places = _machine(small, convs)
    c0 = convs[0]
    inp, ring = c0.h * c0.w * c0.cin, lw._in_ring_bytes(c0)
    # staging above _machine's scratch; the output stays on chip, above the staging
    at = programs.align(max(p.out[1] + int(np.prod(c.out_shape))
                            for c, p in zip(convs[:-1], places[:-1])))
    dst, n = at + programs.align(inp), int(np.prod(convs[-1].out_shape))
    places[-1] = replace(places[-1], out=(Space.PCACHE, dst))
    members = [cascade.Member(c, p) for c, p in zip(convs, places)]

    def run(prog):
        sim, _ = _machine(small, convs)
        rep = sim.run(prog + programs.end())
        return sim.mem.read(Space.PCACHE, dst, n), rep

    want, _ = run([i for m in members for i in programs.conv2d_layer(small, m.conv,
                                                                      m.place).instrs])
    assert ring < inp and ring == lw.CASCADE_IN_SLOTS * lw.CASCADE_IN_ROWS * c0.w * c0.cin
    assert lw._linked(members, (at, 0, programs.align(inp)))[1].in_slots == 0
    assert lw._linked(members, (at, 0, programs.align(ring) - 1)) is None
    ms, link = lw._linked(members, (at, 0, programs.align(ring)))
    assert link.in_slots == lw.CASCADE_IN_SLOTS and link.in_rows == lw.CASCADE_IN_ROWS
    assert link.inp == (0, at) and link.out is None
    ms[0] = replace(ms[0], band_rows=4)
    got, rep = run(cascade.cascade_program(small, ms, None, 8, 2, link))
    np.testing.assert_array_equal(got, want)
    assert inp < rep.host_in < 1.05 * inp  # the halo rows two runs share, twice


def test_tuned_loop_order_and_bands_do_not_keep_a_conv_out_of_its_cascade(small):
    """A tuned mapping is measured with the layer alone: in a cascade a conv tuned to tile
    order runs band order with the cascade's bands (it used to break the chain)."""
    from edgec.targets.edge_npu import tuner
    from edgec.targets.edge_npu.mapping import Mapping

    rng = np.random.default_rng(5)
    convs = _chain(64)
    layers = [_conv_layer(rng, c, 4 if i == 0 else -3) for i, c in enumerate(convs)]
    names = ["x"] + [f"t{i}" for i in range(len(convs) - 1)] + ["y"]
    tensors = [layers[0].inputs[0]] + [ly.out for ly in layers]

    def segment():
        return Segment("s", ["x"], ["y"], [SegLayer(f"c{i}", ly, [names[i]], names[i + 1])
                                           for i, ly in enumerate(layers)],
                       {n: (1, t.shape[2], t.shape[0], t.shape[1]) for n, t in
                        zip(names, tensors)}, dict(zip(names, tensors)))

    keys = [t.key for t in tuner.tasks_of(lower(small, [segment()]))]
    tile = {k: Mapping(band_rows=1, order="tile") for k in keys}
    seg = segment()
    model = lower(small, [seg], mappings=tile)
    assert_segments_bit_exact(model, [seg], small)
    cascaded = [ly["name"] for ly in model.segments[0].layers if "cascade" in ly]
    assert len(cascaded) >= 2


@pytest.mark.parametrize("mapping", [{"band_rows": 1, "order": "band"},
                                     {"band_rows": 1, "order": "band", "dataflow": "os"}],
                         ids=["one_row_bands", "and_os"])
def test_a_cascade_also_tries_the_default_mappings(small, mapping):
    """Tuned mappings are measured with each conv alone; in a cascade one-row bands (and
    OS) cost more than they save. Every way a cascade is timed is also tried with the
    default mappings, so the tuned build's cascade is no slower than the default one,
    and still bit-exact (without those tries: 29,647 / 29,711 cycles against 21,268)."""
    from edgec.targets.edge_npu import tuner
    from edgec.targets.edge_npu.mapping import Mapping

    def cascade_cycles(model):
        groups = {ly["cascade"]["name"]: ly["cascade"]["cycles"]
                  for ly in model.segments[0].layers if "cascade" in ly}
        assert len(groups) == 1
        return next(iter(groups.values()))

    default = lower(small, [_six_convs(16)])
    keys = [t.key for t in tuner.tasks_of(default)]
    tuned = {k: Mapping.from_json(mapping) for k in keys}
    seg = _six_convs(16)
    model = lower(small, [seg], mappings=tuned)
    assert_segments_bit_exact(model, [seg], small)
    assert cascade_cycles(model) <= cascade_cycles(default)
