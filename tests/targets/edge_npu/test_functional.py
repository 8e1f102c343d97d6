"""Bit-exact checks of generated layer programs against the numpy reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from edgec.targets.edge_npu import intmath, programs
from edgec.targets.edge_npu.isa import MUL_KEYS, Kind, Op, Space, VecOp, keyed_block, make
from edgec.targets.edge_npu.simulator import Simulator

from .conftest import run_conv
from .reference import conv_requant, conv_transpose_requant

CASES = [  # h, w, cin, cout, k, stride, pad, depthwise
    (9, 9, 5, 7, 3, 1, (1, 1, 1, 1), False),
    (12, 10, 20, 33, 3, 2, (1, 1, 1, 1), False),   # K, N not multiples of 16
    (16, 16, 24, 24, 3, 1, (1, 1, 1, 1), True),     # depthwise, two groups on 16x16
    (15, 15, 8, 8, 3, 2, (0, 0, 1, 1), True),       # TF-style asymmetric pad
    (40, 40, 16, 32, 1, 1, (0, 0, 0, 0), False),    # several bands, ping-pong banks
    (7, 7, 18, 1, 5, 1, (2, 2, 2, 2), False),       # N = 1
]


def _layer(rng, h, w, cin, cout, k, stride, pad, dw):
    conv = programs.Conv(h, w, cin, cout, k, k, stride, pad, dw)
    x = rng.integers(-128, 128, (h, w, cin), dtype=np.int8)
    shape = (cout, k, k) if dw else (cout, k, k, cin)
    wt = rng.integers(-127, 128, shape, dtype=np.int8)
    bias = rng.integers(-5000, 5000, cout)
    ms = [intmath.quantize_multiplier(float(v)) for v in rng.uniform(1e-4, 3e-3, cout)]
    mult = np.array([m for m, _ in ms])
    shift = np.array([s for _, s in ms])
    return conv, x, wt, bias, mult, shift


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("stream", [False, True], ids=["cached", "streamed"])
def test_conv_bit_exact(small, case, dataflow, stream):
    rng = np.random.default_rng(hash(case) % 2**32)
    stride, pad, dw = case[5:]
    conv, x, wt, bias, mult, shift = _layer(rng, *case)
    zp_in, zp_out, qmin, qmax = 3, -7, -128, 127
    got, rep, _ = run_conv(small, conv, x, wt, bias, mult, shift, zp_out, qmin, qmax,
                            zp_in=zp_in, dataflow=dataflow, stream=stream)
    want = conv_requant(x, wt, bias, mult, shift, zp_out, qmin, qmax, stride, pad, zp_in, dw)
    np.testing.assert_array_equal(got, want)
    assert rep.cycles > 0
    assert rep.streamed_weights == (wt.size if stream else 0)


def _transposed(rng, h, w, cin, c, p):
    """A stride-p transposed conv's int8 weights (I, O, p, p), input and requant
    parameters, and its weights as the 1x1 conv of p * p phases (OHWI)."""
    wt = rng.integers(-127, 128, (cin, c, p, p), dtype=np.int8)
    x = rng.integers(-128, 128, (h, w, cin), dtype=np.int8)
    bias = rng.integers(-3000, 3000, c)
    ms = [intmath.quantize_multiplier(float(v)) for v in rng.uniform(2e-4, 3e-3, c)]
    mult, shift = np.array([m for m, _ in ms]), np.array([s for _, s in ms])
    w1 = np.ascontiguousarray(wt.transpose(2, 3, 1, 0)).reshape(p * p * c, 1, 1, cin)
    return wt, x, bias, mult, shift, w1


@pytest.mark.parametrize("h, w, cin, c, p", [(5, 7, 10, 8, 2), (6, 3, 20, 1, 2),
                                              (4, 5, 6, 5, 3), (40, 9, 8, 4, 2)])
@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("order", ["band", "tile"])
def test_transposed_conv_bit_exact(small, h, w, cin, c, p, dataflow, order):
    """Kernel == stride p: a 1x1 conv computing p * p phases, each output row phase stored
    with one strided DMA per band (several bands in the 40-row case, 1 channel and 3x3
    phases too), against a scatter-loop reference."""
    wt, x, bias, mult, shift, w1 = _transposed(np.random.default_rng(h * 100 + c), h, w,
                                               cin, c, p)
    conv = programs.Conv(h, w, cin, p * p * c, phases=p)
    got, _, lp = run_conv(small, conv, x, w1, np.tile(bias, p * p), np.tile(mult, p * p),
                          np.tile(shift, p * p), 5, -100, 127, zp_in=-4, dataflow=dataflow,
                          order=order)
    want = conv_transpose_requant(x, wt, bias, mult, shift, 5, -100, 127)
    np.testing.assert_array_equal(got, want)
    stores = [i for i in lp.instrs if i.op == Op.STORE]
    assert len(stores) == lp.bands * p  # one DMA per band and output row phase


@pytest.mark.parametrize("h, w, cin, c, p, g", [(6, 4, 6, 2, 2, 2), (4, 6, 6, 1, 3, 3),
                                                 (40, 8, 8, 1, 2, 4)])
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_packed_transposed_conv_bit_exact(small, h, w, cin, c, p, g, dataflow):
    """Packed g pixels wide, a transposed conv's phase tile holds g pixels' phase runs in
    (q, j, c) order: still one DMA per band and phase, and the array streams fewer pixel
    rows (g times fewer per fold, for a K g times as deep)."""
    wt, x, bias, mult, shift, w1 = _transposed(np.random.default_rng(h * 10 + g), h, w,
                                               cin, c, p)
    conv = programs.Conv(h, w, cin, p * p * c, phases=p, pack=g)
    assert programs.pack_error(small, conv) is None and g in programs.packs(small, conv)
    got, _, lp = run_conv(small, conv, x, w1, np.tile(bias, p * p), np.tile(mult, p * p),
                          np.tile(shift, p * p), 5, -100, 127, zp_in=-4, dataflow=dataflow)
    want = conv_transpose_requant(x, wt, bias, mult, shift, 5, -100, 127)
    np.testing.assert_array_equal(got, want)
    assert len([i for i in lp.instrs if i.op == Op.STORE]) == lp.bands * p
    gemm_pixels = sum(i.m_len for i in lp.instrs if i.op == Op.GEMM)
    _, _, plain = run_conv(small, replace(conv, pack=1), x, w1, np.tile(bias, p * p),
                           np.tile(mult, p * p), np.tile(shift, p * p), 5, -100, 127,
                           zp_in=-4, dataflow=dataflow)
    assert gemm_pixels < sum(i.m_len for i in plain.instrs if i.op == Op.GEMM)


def test_transposed_conv_wider_than_the_array_is_refused(small):
    with pytest.raises(programs.ProgramError, match="wider than"):
        programs.n_tiles(programs.Conv(4, 4, 8, 4 * 9, phases=2), small.cols)


def test_gemm_clamp_and_streamed_weights(small):
    """GEMM with a ReLU6-style clamp (qmin/qmax) and weights streamed from the host."""
    rng = np.random.default_rng(1)
    conv, x, wt, bias, mult, shift = _layer(rng, 37, 1, 45, 19, 1, 1, (0, 0, 0, 0), False)
    got, rep, _ = run_conv(small, conv, x, wt, bias, mult, shift, -10, -10, 60,
                           stream=True)
    want = conv_requant(x, wt, bias, mult, shift, -10, -10, 60)
    np.testing.assert_array_equal(got, want)
    assert rep.streamed_weights == wt.size and rep.cached_weights == 0


def test_lut_after_requant(small):
    rng = np.random.default_rng(2)
    conv, x, wt, bias, mult, shift = _layer(rng, 6, 6, 10, 12, 3, 1, (1, 1, 1, 1), False)
    lut = intmath.build_lut(np.tanh, 0.05, -3, 1 / 128, 0)
    got, _, _ = run_conv(small, conv, x, wt, bias, mult, shift, -3, -128, 127, lut=lut)
    want = conv_requant(x, wt, bias, mult, shift, -3, -128, 127, 1, (1, 1, 1, 1))
    np.testing.assert_array_equal(got, lut[want.astype(np.int64) + 128])


def test_add_with_rescale(small):
    rng = np.random.default_rng(3)
    n = 70000  # more than two chunks, so banks are reused
    a = rng.integers(-128, 128, n, dtype=np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int8)
    p = intmath.add_params(0.02, 0.05, 0.06)
    block = programs.add_block(zp1=4, zp2=-9, zp_out=2, qmin=-128, qmax=127, **p)
    sim = Simulator(small, host_bytes=1 << 19)
    sim.mem.write(Space.HOST, 0, a)
    sim.mem.write(Space.HOST, 1 << 17, b)
    sim.mem.write(Space.PCACHE, 0, block)
    prog = programs.add_layer(small, n, (Space.HOST, 0), (Space.HOST, 1 << 17),
                              (Space.HOST, 1 << 18), 0) + programs.end()
    sim.run(prog)
    got = sim.mem.read(Space.HOST, 1 << 18, n)
    np.testing.assert_array_equal(got, intmath.add_int8(a, 4, b, -9, p, 2))
    # and the integer ADD is the real sum to within one output step (saturation aside)
    real = (a.astype(float) - 4) * 0.02 + (b.astype(float) + 9) * 0.05
    real = np.clip(real, (-128 - 2) * 0.06, (127 - 2) * 0.06)
    assert np.abs((got.astype(float) - 2) * 0.06 - real).max() <= 0.06


def test_mul_and_pools(small):
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (6, 8, 5), dtype=np.int8)
    y = rng.integers(-128, 128, x.size, dtype=np.int8)
    sim = Simulator(small)
    sim.mem.write(Space.HOST, 0, x)
    sim.mem.write(Space.HOST, 4096, y)
    mult, shift = intmath.quantize_multiplier(0.01)
    sim.mem.write(Space.PCACHE, 0, keyed_block(MUL_KEYS, zp1=1, zp2=-2, mult=mult,
                                                shift=shift, zp_out=0, qmin=-128, qmax=127))
    sim.mem.write(Space.PCACHE, 64, programs.pool_block(6, 8, 5, 2, 2))
    n = x.size
    prog = [
        make(Op.LOAD, kind=Kind.ACT, space=Space.HOST, dram=0, sram=0, rows=1, cols=1,
             depth=n, stride=n),
        make(Op.LOAD, ("push_next",), kind=Kind.ACT, space=Space.HOST, dram=4096,
             sram=1024, rows=1, cols=1, depth=n, stride=n),
        make(Op.VEC, ("pop_prev",), vop=VecOp.MUL, src=0, src2=1024, dst=2048, count=n,
             param=0),
        make(Op.VEC, vop=VecOp.MAXPOOL, src=0, dst=3072, count=60 * 4, param=64),
        make(Op.VEC, ("push_next",), vop=VecOp.AVGPOOL, src=0, dst=3200, count=60 * 4,
             param=64),
        make(Op.STORE, ("pop_prev",), space=Space.HOST, dram=8192, sram=2048, rows=1,
             cols=1, depth=n + 1024 + 200, stride=0),
        make(Op.END),
    ]
    sim.run(prog)
    out = sim.mem.read(Space.HOST, 8192, n + 1024 + 200)
    np.testing.assert_array_equal(
        out[:n], intmath.requantize((x.reshape(-1).astype(np.int64) - 1) * (y + 2.0).astype(
            np.int64), mult, shift, 0))
    win = x.astype(np.int64).reshape(3, 2, 4, 2, 5)
    np.testing.assert_array_equal(out[1024:1024 + 60].reshape(3, 4, 5), win.max(axis=(1, 3)))
    s = win.sum(axis=(1, 3))
    avg = np.where(s >= 0, (s + 2) // 4, -((-s + 2) // 4))  # round half away from zero
    np.testing.assert_array_equal(out[1152:1152 + 60].reshape(3, 4, 5), avg)


@pytest.mark.parametrize("queue", [4, 0], ids=["vector-queue", "no-queue"])
def test_double_buffered_accumulators_bit_exact(small, queue):
    """N-tiles alternate accumulator halves so requantize overlaps the next tile's folds;
    the integers are the same, and the overlap makes the layer faster."""
    import dataclasses

    soc = small.with_link("soc")  # on usb the link hides the compute queue entirely
    cfg = dataclasses.replace(soc, vector_queue=queue)
    rng = np.random.default_rng(5)
    conv, x, wt, bias, mult, shift = _layer(rng, 16, 16, 40, 48, 1, 1, (0, 0, 0, 0), False)
    lut = rng.integers(-128, 128, 256)
    got, rep, lp = run_conv(cfg, conv, x, wt, bias, mult, shift, 2, -128, 127, lut=lut,
                            dataflow="ws")
    want = conv_requant(x, wt, bias, mult, shift, 2, -128, 127)
    np.testing.assert_array_equal(got, lut[want.astype(np.int64) + 128].astype(np.int8))
    half = cfg.accumulator_words // 2
    assert {i.acc for i in lp.instrs if i.op == Op.GEMM} == {0, half}
    assert {i.src for i in lp.instrs if i.op == Op.VEC and i.vop == VecOp.REQUANT} == {0, half}
    if queue:
        serial = run_conv(dataclasses.replace(soc, vector_queue=0), conv, x, wt, bias, mult,
                          shift, 2, -128, 127, lut=lut, dataflow="ws")[1]
        assert rep.cycles < serial.cycles


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("lut", [False, True], ids=["requant", "lut"])
def test_long_k_vector_times_matrix_bit_exact(small, dataflow, lut):
    """K = 5000 > 2047 (one DMA row, one CFG): flat input runs and K chunks that
    accumulate (OS: chained folds), as a global pool over 80x80 pixels needs."""
    rng = np.random.default_rng(8)
    conv, x, wt, bias, mult, shift = _layer(rng, 1, 1, 5000, 40, 1, 1, (0, 0, 0, 0), False)
    table = rng.integers(-128, 128, 256) if lut else None
    got, _, lp = run_conv(small, conv, x, wt, bias, mult, shift, 4, -128, 127,
                            dataflow=dataflow, lut=table)
    want = conv_requant(x, wt, bias, mult, shift, 4, -128, 127)
    if lut:
        want = table[want.astype(np.int64) + 128].astype(np.int8)
    np.testing.assert_array_equal(got, want)
    cfgs = [i for i in lp.instrs if i.op == Op.CFG]
    assert max(i.cin for i in cfgs) == 2047 and len(cfgs) == 3 * 3  # 3 chunks x 3 N-tiles
    chained = [i for i in lp.instrs if i.op == Op.GEMM and i.chain]
    assert len(chained) == (2 * 3 if dataflow == "os" else 0)


def _run_vector_program(cfg, prog, inputs, out_bytes, params):
    """Place HOST inputs (addr -> int8 array) and PCACHE params, run, read the output."""
    sim = Simulator(cfg, host_bytes=1 << 22)
    for addr, arr in inputs.items():
        sim.mem.write(Space.HOST, addr, arr)
    for addr, words in params.items():
        sim.mem.write(Space.PCACHE, addr, np.asarray(words, dtype=np.int32))
    sim.run(prog + programs.end())
    return sim.mem.read(Space.HOST, 1 << 21, out_bytes)


@pytest.mark.parametrize("f", [2, 4])
@pytest.mark.parametrize("lut", [False, True], ids=["copy", "lut"])
def test_resize_nearest_bit_exact(small, f, lut):
    """Each input row stored f x f times, pixels f apart; several bands on the small
    config (a 64 KiB bank holds 12 of these 40 x 64 rows and their copies)."""
    from edgec.targets.edge_npu.isa import clamp_block, lut_block
    from edgec.targets.edge_npu.vector_layers import resize_layer

    rng = np.random.default_rng(f)
    x = rng.integers(-128, 128, (30, 40, 64), dtype=np.int8)
    table = rng.integers(-128, 128, 256)
    vop = (VecOp.LUT, 0) if lut else (VecOp.CLAMP, 0)
    prog = resize_layer(small, 30, 40, 64, f, (Space.HOST, 0), (Space.HOST, 1 << 21), vop)
    words = lut_block(table) if lut else clamp_block(-128, 127)
    got = _run_vector_program(small, prog, {0: x}, x.size * f * f, {0: words})
    y = table[x.astype(np.int64) + 128].astype(np.int8) if lut else x
    np.testing.assert_array_equal(got.reshape(30 * f, 40 * f, 64),
                                  np.repeat(np.repeat(y, f, axis=0), f, axis=1))


@pytest.mark.parametrize("f", [2, 3, 8])
@pytest.mark.parametrize("lut", [False, True], ids=["copy", "lut"])
def test_resize_on_chip_two_passes_bit_exact(small, f, lut):
    """Output in the parameter cache: the first pass stores each input row f times into
    output row f y (through the LUT if any), the second reads those rows back and stores
    each f - 1 more times, a band of rows per DMA, behind a token relay (no SYNC)."""
    from edgec.targets.edge_npu.isa import clamp_block, lut_block
    from edgec.targets.edge_npu.vector_layers import resize_layer

    h, w, c = 9, 10, 24
    rng = np.random.default_rng(10 + f)
    x = rng.integers(-128, 128, (h, w, c), dtype=np.int8)
    table = rng.integers(-128, 128, 256)
    out = 8192
    vop = (VecOp.LUT, 0) if lut else (VecOp.CLAMP, 4096)
    prog = resize_layer(small, h, w, c, f, (Space.HOST, 0), (Space.PCACHE, out), vop,
                        (VecOp.CLAMP, 4096))
    assert sum(i.op == Op.SYNC for i in prog) == 1
    stores = [i for i in prog if i.op == Op.STORE]
    assert len(stores) < h * f * f  # the one-pass program's count
    sim = Simulator(small, host_bytes=1 << 20)
    sim.mem.write(Space.HOST, 0, x)
    sim.mem.write(Space.PCACHE, 0, lut_block(table).astype(np.int32))
    sim.mem.write(Space.PCACHE, 4096, clamp_block(-128, 127).astype(np.int32))
    sim.run(prog + programs.end())
    got = sim.mem.read(Space.PCACHE, out, x.size * f * f).reshape(h * f, w * f, c)
    y = table[x.astype(np.int64) + 128].astype(np.int8) if lut else x
    np.testing.assert_array_equal(got, np.repeat(np.repeat(y, f, axis=0), f, axis=1))


def test_resize_second_pass_needs_its_token_relay(small):
    """Without the relay (the first pass's last STORE -> CFG -> the second pass's first
    LOAD) the second pass reloads a bank the first is still using: a race."""
    import dataclasses

    from edgec.targets.edge_npu.isa import clamp_block
    from edgec.targets.edge_npu.races import RaceError
    from edgec.targets.edge_npu.vector_layers import _resize

    x = np.random.default_rng(0).integers(-128, 128, (9, 10, 24), dtype=np.int8)
    rows = min(9, small.activation_bank // 2 // (10 * 24))
    prog = _resize(small, 9, 10, 24, 8, (Space.HOST, 0), (Space.PCACHE, 8192),
                   (VecOp.CLAMP, 4096), (VecOp.CLAMP, 4096), True, rows, True, 24)
    k = next(i for i, ins in enumerate(prog) if ins.op == Op.CFG)
    load = next(i for i, ins in enumerate(prog) if ins.op == Op.LOAD and i > k)
    store = max(i for i, ins in enumerate(prog) if ins.op == Op.STORE and i < k)
    for i, drop in ((k, {"pop_next", "push_prev"}), (load, {"pop_next"}), (store, {"push_prev"})):
        assert drop <= prog[i].deps
        prog[i] = dataclasses.replace(prog[i], deps=prog[i].deps - drop)
    sim = Simulator(small, host_bytes=1 << 20)
    sim.mem.write(Space.HOST, 0, x)
    sim.mem.write(Space.PCACHE, 4096, clamp_block(-128, 127).astype(np.int32))
    with pytest.raises(RaceError):
        sim.run(prog + programs.end())


def test_concat_along_channels_bit_exact(small):
    """Three inputs of 24, 5 and 40 channels, each through its own LUT, at their offsets;
    the 40-channel input takes two chunks, so the four chunks use both banks twice."""
    from edgec.targets.edge_npu.isa import lut_block
    from edgec.targets.edge_npu.vector_layers import concat_layer

    rng = np.random.default_rng(3)
    chans = [24, 5, 40]
    xs = [rng.integers(-128, 128, (1000, c), dtype=np.int8) for c in chans]
    tables = [rng.integers(-128, 128, 256) for _ in chans]
    addrs = [0, 100_000, 200_000]
    prog = concat_layer(small, 1000, chans, [(Space.HOST, a) for a in addrs],
                        (Space.HOST, 1 << 21), [(VecOp.LUT, 4096 * i) for i in range(3)])
    got = _run_vector_program(small, prog, dict(zip(addrs, xs)), 1000 * sum(chans),
                              {4096 * i: lut_block(t) for i, t in enumerate(tables)})
    want = np.concatenate([t[x.astype(np.int64) + 128].astype(np.int8)
                           for t, x in zip(tables, xs)], axis=1)
    np.testing.assert_array_equal(got.reshape(1000, sum(chans)), want)


PACKED = [  # h, w, cin, cout, k, (stride y, x), pad, pack
    (9, 8, 10, 7, 3, (1, 1), (1, 1, 1, 1), 2),
    (12, 12, 20, 5, 3, (2, 2), (1, 1, 1, 1), 3),    # x stride 6 in the packed window
    (10, 12, 6, 4, 3, (2, 1), (1, 1, 1, 1), 4),     # PP-OCR's (2, 1) stride
    (40, 16, 8, 8, 1, (1, 1), (0, 0, 0, 0), 2),     # 1x1, several bands
    (7, 10, 18, 1, 5, (1, 1), (2, 2, 2, 2), 5),     # N = 1, a 9-wide packed window
]


@pytest.mark.parametrize("case", PACKED)
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_packed_conv_bit_exact(small, case, dataflow):
    """``Conv.pack`` g: g adjacent output pixels per array pass, from the layer's own
    weights and requant parameters, against the direct-loop reference."""
    h, w, cin, cout, k, (sh, sw), pad, g = case
    rng = np.random.default_rng(h * 1000 + cout * 10 + g)
    _, x, wt, bias, mult, shift = _layer(rng, h, w, cin, cout, k, sw, pad, False)
    conv = programs.Conv(h, w, cin, cout, k, k, sw, pad, stride_h=sh, pack=g)
    got, _, lp = run_conv(small, conv, x, wt, bias, mult, shift, -7, -128, 127, zp_in=3,
                          dataflow=dataflow)
    want = conv_requant(x, wt, bias, mult, shift, -7, -128, 127, (sh, sw), pad, 3)
    np.testing.assert_array_equal(got, want)
    assert lp.macs == conv.macs == want.size * k * k * cin  # useful MACs, not the zeros
    gemms = [i for i in lp.instrs if i.op == Op.GEMM]
    assert max(i.n_len for i in gemms) == g * cout


@pytest.mark.parametrize("order", ["band", "tile"])
def test_packed_conv_bands_and_streamed_weights(small, order):
    rng = np.random.default_rng(7)
    _, x, wt, bias, mult, shift = _layer(rng, 30, 12, 12, 6, 3, 1, (1, 1, 1, 1), False)
    conv = programs.Conv(30, 12, 12, 6, 3, 3, 1, (1, 1, 1, 1), pack=2)
    got, rep, lp = run_conv(small, conv, x, wt, bias, mult, shift, 4, -128, 127, zp_in=-2,
                            stream=True, band_rows=4, order=order)
    np.testing.assert_array_equal(got, conv_requant(x, wt, bias, mult, shift, 4, -128, 127,
                                                    1, (1, 1, 1, 1), -2))
    assert lp.bands == 8
    assert rep.streamed_weights == 3 * 4 * 12 * 12  # K of the packed 3x4 window x 12


@pytest.mark.parametrize("order", ["band", "tile"])
def test_streamed_weights_with_several_tiles_and_bands(small, order):
    """40 output channels on 16 columns (3 N-tiles), 5 bands: in tile order each tile's
    weights stream just before its first band, so the compute queue's token pops meet the
    loads they wait for (streaming them all up front let band 1's GEMMs start on tile 1's
    weight token before band 1 was loaded: a race)."""
    rng = np.random.default_rng(8)
    _, x, wt, bias, mult, shift = _layer(rng, 20, 12, 12, 40, 3, 1, (1, 1, 1, 1), False)
    conv = programs.Conv(20, 12, 12, 40, 3, 3, 1, (1, 1, 1, 1))
    got, rep, lp = run_conv(small, conv, x, wt, bias, mult, shift, 4, -128, 127, zp_in=-2,
                            stream=True, band_rows=4, order=order)
    np.testing.assert_array_equal(got, conv_requant(x, wt, bias, mult, shift, 4, -128, 127,
                                                    1, (1, 1, 1, 1), -2))
    assert lp.bands == 5 and len(programs.n_tiles(conv, small.cols)) == 3
    assert rep.streamed_weights == 9 * 12 * 40


def test_unequal_strides_run_several_rows_per_band(small):
    """The CFG's y stride lets a (2, 1)-strided conv run multi-row bands."""
    rng = np.random.default_rng(3)
    _, x, wt, bias, mult, shift = _layer(rng, 24, 10, 8, 12, 3, 1, (1, 1, 1, 1), False)
    conv = programs.Conv(24, 10, 8, 12, 3, 3, 1, (1, 1, 1, 1), stride_h=2)
    got, _, lp = run_conv(small, conv, x, wt, bias, mult, shift, 0, -128, 127, zp_in=1)
    np.testing.assert_array_equal(got, conv_requant(x, wt, bias, mult, shift, 0, -128, 127,
                                                    (2, 1), (1, 1, 1, 1), 1))
    assert lp.bands < conv.out_h
    assert {i.stride_h for i in lp.instrs if i.op == Op.CFG} == {2}


def test_pack_refusals(small):
    assert "multiple of the pack" in programs.pack_error(small, programs.Conv(4, 5, 3, 4,
                                                                              pack=2))
    assert "exceed" in programs.pack_error(small, programs.Conv(4, 4, 3, 9, pack=2))
    # a transposed conv's N-tile is one output row phase: 2 x 2 x 5 columns
    assert "exceed" in programs.pack_error(small, programs.Conv(4, 4, 3, 4 * 5, phases=2,
                                                                pack=2))
    assert "exceed" in programs.pack_error(small, programs.Conv(4, 34, 3, 3, 1, 1, 1,
                                                                depthwise=True, pack=17))


def test_choose_pack(npu):
    """PP-OCR det's 3x3 96 -> 24 head convs pack 2 pixels (48 of 64 columns); the fold
    cycles drop by a third. A 64-channel conv or an odd row does not pack."""
    det = programs.Conv(80, 80, 96, 24, 3, 3, 1, (1, 1, 1, 1))
    assert programs.choose_pack(npu, det) == 2
    best = min(programs.fold_cost(npu, programs.Conv(**{**det.__dict__, "pack": 2}), df)
               for df in programs.Dataflow)
    plain = min(programs.fold_cost(npu, det, df) for df in programs.Dataflow)
    assert best < 0.7 * plain
    assert programs.choose_pack(npu, programs.Conv(80, 80, 96, 64, 3, 3, 1, (1, 1, 1, 1))) == 1
    assert programs.choose_pack(npu, programs.Conv(9, 9, 96, 24, 3, 3, 1, (1, 1, 1, 1))) == 1


PACKED_DW = [  # h, w, channels, k, (stride y, x), pad, pack
    (9, 8, 24, 3, (1, 1), (1, 1, 1, 1), 2),         # 3 groups of 8 channels
    (12, 12, 20, 3, (2, 2), (0, 0, 1, 1), 2),       # groups of 8, 8, 4; TF-style pad
    (10, 12, 16, 5, (1, 1), (2, 2, 2, 2), 4),       # a 5 + 3 = 8-wide packed window
    (10, 12, 6, 3, (2, 1), (1, 1, 1, 1), 4),        # (2, 1) stride, groups of 4 and 2
]


@pytest.mark.parametrize("case", PACKED_DW)
@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("stream", [False, True], ids=["cached", "streamed"])
def test_packed_depthwise_bit_exact(small, case, dataflow, stream):
    """A packed depthwise conv: each group of cols // g channels is a GEMM over a wider
    window whose g lanes expand the group's compact taps, and whose output pixels the
    STORE scatters with a pitch; the weights stay the compact taps."""
    h, w, c, k, (sh, sw), pad, g = case
    rng = np.random.default_rng(h * 100 + c + g)
    _, x, wt, bias, mult, shift = _layer(rng, h, w, c, c, k, sw, pad, True)
    conv = programs.Conv(h, w, c, c, k, k, sw, pad, True, stride_h=sh, pack=g)
    got, rep, lp = run_conv(small, conv, x, wt, bias, mult, shift, 9, -120, 127, zp_in=-5,
                            dataflow=dataflow, stream=stream)
    want = conv_requant(x, wt, bias, mult, shift, 9, -120, 127, (sh, sw), pad, -5, True)
    np.testing.assert_array_equal(got, want)
    assert lp.macs == conv.macs == want.size * k * k
    gemms = [i for i in lp.instrs if i.op == Op.GEMM]
    assert all(i.diag and i.lanes == g for i in gemms)
    assert max(i.n_len for i in gemms) <= small.cols
    assert programs.pack_weights(conv, wt, small.cols).size == wt.size
    stores = [i for i in lp.instrs if i.op == Op.STORE]
    assert all(i.cols == g and i.pitch == c for i in stores)
    assert rep.streamed_weights == (programs.pack_weights(conv, wt, small.cols).size
                                    if stream else 0)
