"""Vector-unit layer programs run on the simulator against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import programs, vector_layers
from edgec.targets.edge_npu.isa import Op, Space, VecOp, clamp_block
from edgec.targets.edge_npu.simulator import Simulator, simulate
from edgec.targets.edge_npu.vector_layers import resize_layer

PARAM = 0
IN = 4096


def _run_resize(cfg, h, w, c, f, out_space=Space.PCACHE, two=True):
    rng = np.random.default_rng(h * w * c * f)
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    sim = Simulator(cfg, host_bytes=1 << 20)
    sim.mem.write(Space.PCACHE, PARAM, np.asarray(clamp_block(-128, 127), dtype=np.int32))
    sim.mem.write(Space.PCACHE, IN, x.reshape(-1))
    out = (out_space, IN + x.size + 64 if out_space == Space.PCACHE else 0)
    copy = (VecOp.CLAMP, PARAM)
    prog = resize_layer(cfg, h, w, c, f, (Space.PCACHE, IN), out, copy, copy if two else None)
    sim.run(prog + programs.end())
    got = sim.mem.read(out[0], out[1], x.size * f * f).reshape(h * f, w * f, c)
    return x, got, prog


@pytest.mark.parametrize("h,w,c,f,space,two", [
    (6, 5, 8, 2, Space.PCACHE, True),
    (40, 24, 16, 2, Space.PCACHE, True),    # several bands through both banks
    (9, 7, 24, 3, Space.PCACHE, True),
    (12, 10, 8, 4, Space.HOST, True),       # host output: every dy from the first pass
    (20, 12, 8, 2, Space.PCACHE, False),    # no copy: f x f stores per band
    (4, 90, 48, 2, Space.PCACHE, True),     # f * row >= 2**14: per-row stores
    (3, 40, 24, 8, Space.PCACHE, True),     # replicated rows: f stores a band
    (3, 90, 48, 4, Space.PCACHE, True),     # an output row >= 2**14: rows one by one
], ids=["small", "bands", "f3", "host", "one_pass", "long_rows", "long_rows_replicated",
        "longer_rows"])
def test_resize_matches_numpy(small, h, w, c, f, space, two):
    x, got, prog = _run_resize(small, h, w, c, f, space, two)
    np.testing.assert_array_equal(got, np.repeat(np.repeat(x, f, axis=0), f, axis=1))
    stores = sum(i.op == Op.STORE for i in prog)
    if f * w * f * c < 1 << 14:
        assert stores < h * f  # whole bands per (dy, dx)
    elif vector_layers.replicable(w, f, c):
        assert stores <= h * f  # per dx, of bands of one row or more
    else:
        assert stores >= h * f  # rows one by one


@pytest.mark.parametrize("two", [False, True], ids=["one_pass", "two_pass"])
@pytest.mark.parametrize("rows", [1, 3, 7])
def test_every_resize_variant_matches_numpy(small, two, rows):
    """Both passes' layouts and any band height give the same tensor (``resize_layer``
    picks among them by simulated cycles)."""
    h, w, c, f = 14, 9, 16, 3
    rng = np.random.default_rng(rows)
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    sim = Simulator(small, host_bytes=1 << 20)
    sim.mem.write(Space.PCACHE, PARAM, np.asarray(clamp_block(-128, 127), dtype=np.int32))
    sim.mem.write(Space.PCACHE, IN, x.reshape(-1))
    out = IN + x.size + 64
    copy = (VecOp.CLAMP, PARAM)
    prog = vector_layers._resize(small, h, w, c, f, (Space.PCACHE, IN), (Space.PCACHE, out), copy,
                   copy if two else None, True, rows, True, c)
    sim.run(prog + programs.end())
    got = sim.mem.read(Space.PCACHE, out, x.size * f * f).reshape(h * f, w * f, c)
    np.testing.assert_array_equal(got, np.repeat(np.repeat(x, f, axis=0), f, axis=1))


@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("f", [2, 3])
@pytest.mark.parametrize("extra", [0, 8], ids=["dense", "pitched"])
def test_replicated_rows_match_numpy_and_keep_the_other_channels(small, rows, f, extra):
    """The replicated-rows layout, also into a slice of a wider tensor (a concat's
    output: pixels ``c + extra`` bytes apart, from channel 3), leaves every other byte."""
    h, w, c = 5, 7, 16
    px = c + extra
    rng = np.random.default_rng(rows * f)
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    sim = Simulator(small, host_bytes=1 << 20)
    sim.mem.write(Space.PCACHE, PARAM, np.asarray(clamp_block(-128, 127), dtype=np.int32))
    sim.mem.write(Space.PCACHE, IN, x.reshape(-1))
    out = IN + x.size + 64
    n = h * f * w * f * px
    sim.mem.write(Space.PCACHE, out, np.full(n, 77, np.int8))
    off = 3 if extra else 0
    prog = vector_layers._replicated(small, h, w, c, f, (Space.PCACHE, IN),
                                     (Space.PCACHE, out + off), (VecOp.CLAMP, PARAM), True,
                                     rows, px)
    assert sum(i.op == Op.STORE for i in prog) == f * -(-h // rows)
    sim.run(prog + programs.end())
    got = sim.mem.read(Space.PCACHE, out, n).reshape(h * f, w * f, px)
    want = np.full((h * f, w * f, px), 77, np.int8)
    want[:, :, off:off + c] = np.repeat(np.repeat(x, f, axis=0), f, axis=1)
    np.testing.assert_array_equal(got, want)


def test_a_pitched_elementwise_store_keeps_the_other_channels(small):
    """An element-wise layer stored into a slice of a wider tensor (pixels 40 bytes
    apart, from channel 5): its result there, every other byte as it was; smaller chunks
    are tried, and the program taken is no slower than the largest chunks'."""
    pixels, c, px = 300, 24, 40
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (pixels, c)).astype(np.int8)
    sim = Simulator(small, host_bytes=1 << 20)
    sim.mem.write(Space.PCACHE, PARAM, np.asarray(clamp_block(-100, 90), dtype=np.int32))
    sim.mem.write(Space.PCACHE, IN, x.reshape(-1))
    out = IN + x.size + 64
    sim.mem.write(Space.PCACHE, out, np.full(pixels * px, 77, np.int8))
    args = (small, pixels, c, [(Space.PCACHE, IN)], (Space.PCACHE, out + 5),
            [(VecOp.CLAMP, PARAM)])
    prog = vector_layers.elementwise_layer(*args, pitch=px)
    sim.run(prog + programs.end())
    got = sim.mem.read(Space.PCACHE, out, pixels * px).reshape(pixels, px)
    want = np.full((pixels, px), 77, np.int8)
    want[:, 5:5 + c] = np.clip(x, -100, 90)
    np.testing.assert_array_equal(got, want)
    largest = vector_layers._elementwise(*args, False, True, px, 0,
                                         small.activation_bank // 2 // c)
    end = programs.end()
    assert simulate(small, prog + end).cycles <= simulate(small, largest + end).cycles


@pytest.mark.parametrize("h,c,f,two", [(40, 96, 2, False), (10, 24, 8, True),
                                       (20, 24, 8, False)],
                         ids=["det_fpn_x2", "det_concat_x8", "det640_concat_x8"])
def test_the_cheaper_layout_is_taken(npu, h, c, f, two):
    """det 320's resizes: x2 of 96 channels copies each input row twice in the bank and
    stores a band's output rows per dx (the read-back would move more bytes than the
    pixel runs it saves); x8 of 24 channels reads rows back (64 pitched stores per band
    would cost a cycle per pixel each). At 640 the x8 output rows are too long for a
    banded STORE per (dy, dx), and the replicated rows beat reading rows back one by
    one. Whichever is taken, it is the fastest of the variants."""
    args = (npu, h, h, c, f, (Space.PCACHE, 0), (Space.PCACHE, 1 << 20), (VecOp.CLAMP, 0))
    prog = resize_layer(*args, (VecOp.CLAMP, 0))
    read_back = any(i.op == Op.LOAD and i.dram >= 1 << 20 for i in prog)
    assert read_back == two
    end = programs.end()
    banded = f * h * f * c < 1 << 14  # (dy, dx) STOREs of whole bands fit the stride
    variants = [vector_layers._resize(*args, cp, True, rows, banded, c)
                for cp in (None, (VecOp.CLAMP, 0)) for rows in (1, 4)]
    variants += [vector_layers._replicated(*args, True, rows, c) for rows in (1, 4)]
    assert simulate(npu, prog + end).cycles <= min(simulate(npu, p + end).cycles
                                                   for p in variants)


def _upsampled_add(cfg, h, w, c, f, pos, lut, space, pitch, rows=None, in_place=False):
    """ADD(x, up(b)) (``pos``: the upsampled operand) by ``upsampled_layer`` (or its
    ``rows`` variant) into a tensor of ``pitch`` bytes a pixel (``in_place``: over x),
    and the same ADD on the upsample numpy made, by the plain element-wise program."""
    from edgec.targets.edge_npu import rounding
    from edgec.targets.edge_npu.isa import lut_block

    rng = np.random.default_rng(h * w + c + f)
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    b = rng.integers(-128, 128, (h // f, w // f, c)).astype(np.int8)
    table = rng.permutation(256).astype(np.int64) - 128
    p = rounding.add_params(0.04, 0.07, 0.08, rounding.Rounding.GEMMLOWP)
    add = programs.add_block(zp1=4, zp2=-11, zp_out=2, qmin=-128, qmax=127, **p)
    sim = Simulator(cfg, host_bytes=1 << 22)
    sim.mem.write(Space.PCACHE, PARAM, np.asarray(add, dtype=np.int32))
    sim.mem.write(Space.PCACHE, 1024, np.asarray(lut_block(table), dtype=np.int32))
    xa = 4096
    ba = xa + -(-x.size // 64) * 64
    ra = ba + -(-b.size // 64) * 64
    oa = ra + -(-x.size // 64) * 64
    ub = np.repeat(np.repeat(table[b.astype(np.int64) + 128] if lut else b, f, 0), f, 1)
    sim.mem.write(space, xa, x.reshape(-1))
    sim.mem.write(space, ba, b.reshape(-1))
    sim.mem.write(space, ra, ub.astype(np.int8).reshape(-1))
    vops = [(VecOp.ADD, PARAM, (0, 1))]
    plain = vector_layers.elementwise_layer(
        cfg, h * w, c, [(space, ra), (space, xa)] if pos == 0 else [(space, xa), (space, ra)],
        (space, oa + 3), vops, pitch=pitch)
    sim.mem.write(space, oa, np.full(h * w * pitch, 77, np.int8))
    sim.run(plain + programs.end())
    want = (sim.mem.read(space, oa + 3, h * w * c).reshape(h, w, c) if in_place else
            sim.mem.read(space, oa, h * w * pitch).reshape(h, w, pitch))
    ins = [(space, xa), (space, ba)]
    up = vector_layers.Up(pos, f, h // f, 1024 if lut else None)
    dst = xa if in_place else oa
    args = (cfg, w, c, ins[::-1] if pos == 0 else ins, (space, dst + 3 * (not in_place)),
            vops, False, True, pitch, up)
    prog = (vector_layers._upsampled(*args, rows) if rows else
            vector_layers.upsampled_layer(cfg, h, *args[1:]))
    if not in_place:
        sim.mem.write(space, oa, np.full(h * w * pitch, 77, np.int8))
    sim.run(prog + programs.end())
    got = sim.mem.read(space, dst, h * w * pitch).reshape(h, w, pitch)
    return got, want, prog, plain


@pytest.mark.parametrize("h,w,c,f,pos,lut,space,pitch", [
    (8, 6, 16, 2, 1, False, Space.PCACHE, 16),
    (8, 6, 16, 2, 0, True, Space.PCACHE, 16),     # upsampled first, through its table
    (40, 24, 32, 2, 1, False, Space.PCACHE, 32),  # several bands through both banks
    (9, 12, 8, 3, 1, True, Space.HOST, 8),
    (12, 8, 24, 2, 1, False, Space.PCACHE, 40),   # into a concat's channels
], ids=["small", "first_with_table", "bands", "f3_host", "pitched"])
def test_an_upsampled_operand_matches_the_upsampled_tensor(small, h, w, c, f, pos, lut, space,
                                                           pitch):
    """An ADD reading an upsample's input (each output row against its input row) gives
    what the plain ADD gives on the upsampled tensor, bytes outside its channels
    untouched, with the race checker on; it moves fewer bytes than the upsample and
    the add would."""
    got, want, prog, plain = _upsampled_add(small, h, w, c, f, pos, lut, space, pitch)
    np.testing.assert_array_equal(got, want)
    moved = sum(i.rows * i.cols * i.depth for i in prog if i.op in (Op.LOAD, Op.STORE))
    assert moved < sum(i.rows * i.cols * i.depth for i in plain
                       if i.op in (Op.LOAD, Op.STORE)) + h * w * c  # + the upsample's store


@pytest.mark.parametrize("in_place", [False, True], ids=["apart", "in_place"])
@pytest.mark.parametrize("rows", [1, 2, 3])
def test_every_upsampled_band_height_matches(small, rows, in_place):
    """Any band height, with the output apart or over the full-size input (chunks touch
    disjoint spans: the race checker finds nothing)."""
    got, want, _, _ = _upsampled_add(small, 12, 10, 16, 2, 1, True, Space.PCACHE, 16, rows,
                                     in_place)
    np.testing.assert_array_equal(got, want)


def test_an_upsampled_operand_with_rows_longer_than_a_dma_stride(npu):
    """Input rows of the upsample longer than the 14-bit stride field (180 pixels of 96
    channels): its band still comes in one LOAD, and the sum matches."""
    got, want, prog, _ = _upsampled_add(npu, 4, 360, 96, 2, 1, False, Space.PCACHE, 96)
    np.testing.assert_array_equal(got, want)
    # a bank holds one input row's chunk: per row, x's two phases and the band
    assert sum(i.op == Op.LOAD for i in prog) == 3 * 2
