"""Layer fusion before lowering: which patterns fuse, and fused programs equal the
unfused integer reference bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from edgec.targets.edge_npu import int_reference, rounding
from edgec.targets.edge_npu.fusion import fuse, fuse_mul_add
from edgec.targets.edge_npu.isa import Op, VecOp
from edgec.targets.edge_npu.layers import Layer, QTensor
from edgec.targets.edge_npu.lower import SegLayer, Segment, lower
from edgec.targets.edge_npu.runtime import NpuDevice
from edgec.targets.edge_npu.simulator import simulate

from .conftest import assert_segments_bit_exact
from .tuner_fixture import _conv_layer

B32 = rounding.Rounding.BINARY32


def _binary(kind, a, b, out, broadcast=False):
    at = {"broadcast": broadcast, "zp1": a.zp, "zp2": b.zp, "zp_out": out.zp, "qmin": -128,
          "qmax": 127, "rounding": "binary32"}
    if kind == "add":
        at.update(rounding.add_params(a.scale, b.scale, out.scale, B32))
    else:
        at["mult"], at["shift"] = rounding.mul_params(a.scale, b.scale, out.scale, B32)
    return Layer(kind, [a, b], out, at, ops=[f"relax.{'add' if kind == 'add' else 'multiply'}"])


def _se_residual(h, w, c, mul_first=True, other=False, mul_is_output=False):
    """conv -> x; add(x or y, mul(x, s)) with s a per-channel segment input (the SE
    scale). ``other``: the add's other operand is a second conv's output y, not x."""
    rng = np.random.default_rng(h * w + c)
    conv = _conv_layer(rng, h, w, 8, c, 1)
    x = conv.out
    s = QTensor((1, 1, c), 1 / 255, -128)
    m = QTensor(x.shape, 0.03, 4)
    y = x
    layers = [SegLayer("c", conv, ["in"], "x")]
    tensors = {"in": conv.inputs[0], "x": x, "s": s, "m": m}
    if other:
        y = QTensor(x.shape, 0.05, 2)
        conv2 = _with_out(_conv_layer(rng, h, w, 8, c, 1), y)
        layers.append(SegLayer("c2", conv2, ["in"], "y"))
        tensors["y"] = y
    out = QTensor(x.shape, 0.06, -3)
    mul = _binary("mul", x, s, m, broadcast=True)
    yname = "y" if other else "x"
    add = _binary("add", *((m, y) if mul_first else (y, m)), out)
    layers += [SegLayer("mul", mul, ["x", "s"], "m"),
               SegLayer("add", add, ["m", yname] if mul_first else [yname, "m"], "o")]
    tensors["o"] = out
    outs = ["o", "m"] if mul_is_output else ["o"]
    shapes = {"in": (1, 8, h, w), "s": (1, c, 1, 1), "o": (1, c, h, w), "m": (1, c, h, w)}
    return Segment("t", ["in", "s"], outs, layers, shapes, tensors)


def _with_out(conv, t):
    """``conv`` requantizing to the zero point of ``t``, its output tensor."""
    return dataclasses.replace(conv, out=t, attrs={**conv.attrs, "zp_out": t.zp})


def _check(cfg, seg, seed=0):
    model = lower(cfg, [seg])
    assert_segments_bit_exact(model, [seg], cfg, seed)
    return model


@pytest.mark.parametrize("mul_first", [True, False])
@pytest.mark.parametrize("other", [False, True])
def test_se_residual_fuses_bit_exact(small, mul_first, other):
    """``x + x * s`` (det's RSE block) and ``y + x * s``, either operand order: one
    ``muladd`` layer, equal to the unfused integer reference."""
    seg = _se_residual(6, 10, 24, mul_first, other)
    model = _check(small, seg)
    kinds = [ly["kind"] for ly in model.segments[0].layers]
    assert kinds == ["conv"] + (["conv"] if other else []) + ["muladd"]


def test_many_chunks_bit_exact(small):
    """A tensor larger than a bank streams in several chunks, double buffered."""
    seg = _se_residual(48, 48, 32)
    model = _check(small, seg, seed=3)
    assert model.segments[0].layers[-1]["kind"] == "muladd"
    prog = model.segments[0].program
    last = max(i for i, ins in enumerate(prog) if ins.op == Op.SYNC)
    assert sum(ins.op == Op.STORE for ins in prog[last:]) >= 3


def _then_add(seg, first=True, twice=False):
    """``seg`` (``_se_residual``) with its sum ``o`` added to ``r``, a segment input (the
    FPN's upsampled coarser level); ``twice``: ``o`` is also a segment output."""
    o = seg.tensors["o"]
    r, z = QTensor(o.shape, 0.09, 7), QTensor(o.shape, 0.11, -6)
    add = _binary("add", *((o, r) if first else (r, o)), z)
    layers = [*seg.layers, SegLayer("add2", add, ["o", "r"] if first else ["r", "o"], "z")]
    return dataclasses.replace(
        seg, inputs=[*seg.inputs, "r"], outputs=["z", "o"] if twice else ["z"],
        layers=layers, tensors={**seg.tensors, "r": r, "z": z},
        shapes={**seg.shapes, "r": seg.shapes["o"], "z": seg.shapes["o"]})


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("other", [False, True])
def test_muladd_then_add_is_one_layer_bit_exact(small, first, other):
    """``(y + x * s) + r`` in either order (det's FPN top-down adds): one ``muladd``
    layer of three vector steps, r loaded beside x; equal to the unfused reference, in
    several chunks."""
    seg = _then_add(_se_residual(30, 40, 24, other=other), first)
    model = _check(small, seg, seed=6)
    kinds = [ly["kind"] for ly in model.segments[0].layers]
    assert kinds == ["conv"] + (["conv"] if other else []) + ["muladd"]
    prog = model.segments[0].program
    last = max(i for i, ins in enumerate(prog) if ins.op == Op.SYNC)
    adds = [ins for ins in prog[last:] if ins.op == Op.VEC and ins.vop == VecOp.ADD]
    assert len(adds) == 2 * sum(ins.op == Op.STORE for ins in prog[last:]) > 2


def test_muladd_read_elsewhere_keeps_its_add():
    """A sum the segment also returns (det's coarsest level, read by its resize and its
    conv) stays a muladd; the add after it is its own layer."""
    seg = _then_add(_se_residual(6, 10, 24), twice=True)
    assert [sl.layer.kind for sl in fuse(seg.layers, seg.outputs)] == ["conv", "muladd", "add"]


def test_mul_read_elsewhere_does_not_fuse():
    """A mul whose output is a segment output (so read outside the add) stays a layer."""
    seg = _se_residual(6, 10, 24, mul_is_output=True)
    assert [sl.layer.kind for sl in fuse_mul_add(seg.layers, seg.outputs)] == \
        ["conv", "mul", "add"]


def test_full_size_mul_does_not_fuse():
    """Only a per-channel (broadcast) scale fuses: ``x * z`` with z a full tensor is left
    to the other passes."""
    seg = _se_residual(6, 10, 24)
    mul = seg.layers[1].layer
    full = Layer("mul", [mul.inputs[0], mul.inputs[0]], mul.out,
                 {**mul.attrs, "broadcast": False}, ops=mul.ops)
    layers = [seg.layers[0], SegLayer("mul", full, ["x", "x"], "m"), seg.layers[2]]
    assert [sl.layer.kind for sl in fuse(layers, seg.outputs)] == ["conv", "mul", "add"]


def test_fused_layer_takes_fewer_cycles(npu):
    """One load of x, one store, one launch: fewer simulated cycles than mul then add."""
    seg = _se_residual(40, 40, 96)
    fused = lower(npu, [seg])
    plain = lower(npu, [_se_residual(40, 40, 96)], fuse=False)

    def cycles(m):
        return simulate(npu, m.segments[0].program).cycles

    assert [ly["kind"] for ly in plain.segments[0].layers] == ["conv", "mul", "add"]
    assert cycles(fused) < cycles(plain)


def _se_scale_conv(h, w, cin, cout, k=1, mul_is_output=False):
    """mul(x, s) -> conv k x k (padding k // 2): squeeze-excite's scale before the block's
    projection (PP-OCR cls)."""
    rng = np.random.default_rng(h * w + cin + k)
    conv = _conv_layer(rng, h, w, cin, cout, k, s_in=0.03, zp_in=4)
    conv.attrs["rounding"] = "binary32"
    xt = QTensor((h, w, cin), 0.05, -7)
    s = QTensor((1, 1, cin), 1 / 255, -128)
    mul = _binary("mul", xt, s, conv.inputs[0], broadcast=True)
    layers = [SegLayer("mul", mul, ["x", "s"], "m"), SegLayer("c", conv, ["m"], "o")]
    tensors = {"x": xt, "s": s, "m": conv.inputs[0], "o": conv.out}
    shapes = {"x": (1, cin, h, w), "s": (1, cin, 1, 1), "m": (1, cin, h, w),
              "o": (1, cout, h, w)}
    return Segment("t", ["x", "s"], ["o", "m"] if mul_is_output else ["o"], layers, shapes,
                   tensors)


@pytest.mark.parametrize("shape", [(6, 10, 24, 40), (30, 40, 32, 24), (12, 12, 48, 96)],
                         ids=["one_band", "bands", "n_tiles"])
def test_se_scale_fuses_into_the_conv_bit_exact(small, shape):
    """The conv scales each input band in place before its GEMMs: one layer, equal to
    the unfused integer reference (one band; several bands through both banks; several
    N-tiles)."""
    seg = _se_scale_conv(*shape)
    model = _check(small, seg, seed=1)
    (ly,) = model.segments[0].layers
    assert ly["kind"] == "conv" and ly["fused_scale"]
    assert ly["ops"][0] == "relax.multiply"
    muls = [i for i in model.segments[0].program if i.op == Op.VEC and i.vop == VecOp.MUL]
    assert len(muls) >= (3 if shape[0] == 30 else 1)  # one per band


@pytest.mark.parametrize("mapping", [{"order": "tile"}, {"dataflow": "os", "band_rows": 3}])
def test_se_scale_with_other_mappings_bit_exact(small, mapping):
    """Tile order reloads (and rescales) each band per N-tile; OS and short bands."""
    from edgec.targets.edge_npu import mapping as mp

    seg = _se_scale_conv(30, 40, 32, 96)
    # the key of the fused conv at its places: lower once, then map it
    key = lower(small, [_se_scale_conv(30, 40, 32, 96)]).segments[0].layers[0]["workload"]
    model = lower(small, [seg], mappings={key: mp.Mapping(**mapping)})
    prog = model.segments[0].program
    muls = sum(i.op == Op.VEC and i.vop == VecOp.MUL for i in prog)
    stores = sum(i.op == Op.STORE for i in prog)
    if "order" in mapping:  # one band load, and one scaling, per (band, N-tile)
        assert muls == stores and muls > 6
    else:
        assert model.segments[0].layers[0]["dataflow"] == "os"
        assert muls == -(-30 // 3)  # one per band of 3 rows
    rng = np.random.default_rng(2)
    ins = [rng.integers(-128, 128, seg.shapes[v]).astype(np.int8) for v in seg.inputs]
    got = NpuDevice(model, small).run_segment(0, ins)[0]
    assert np.array_equal(got, int_reference.run_segment(seg, ins)[0])


def test_padded_conv_or_shared_mul_does_not_take_the_scale():
    """A 3x3 conv with padding would pad with the scaled input's zero point before the
    scale; a mul read elsewhere must still be stored."""
    padded = _se_scale_conv(6, 10, 24, 40, k=3)
    assert [sl.layer.kind for sl in fuse(padded.layers, padded.outputs)] == ["mul", "conv"]
    shared = _se_scale_conv(6, 10, 24, 40, mul_is_output=True)
    assert [sl.layer.kind for sl in fuse(shared.layers, shared.outputs)] == ["mul", "conv"]


def test_scaled_conv_takes_fewer_cycles(npu):
    """cls's SE projection (3 x 96 x 88 -> 16): the fused conv beats mul then conv."""
    seg = _se_scale_conv(3, 96, 88, 16)
    fused = lower(npu, [seg])
    plain = lower(npu, [_se_scale_conv(3, 96, 88, 16)], fuse=False)
    assert len(plain.segments[0].layers) == 2 and len(fused.segments[0].layers) == 1
    assert (simulate(npu, fused.segments[0].program).cycles <
            simulate(npu, plain.segments[0].program).cycles)


def _residual(h, w, cin, cout, k=1, conv_first=True, lut=False, skip_is_input=True,
              scaled=False):
    """[mul(x, s) ->] conv k x k [-> lut] -> add with y: y is a segment input, or
    (``skip_is_input`` False) another conv's output made after the first conv."""
    rng = np.random.default_rng(h + w + cin + cout + k)
    conv = _conv_layer(rng, h, w, cin, cout, k, s_in=0.03, zp_in=4)
    conv.attrs["rounding"] = "binary32"
    shapes = {"x": (1, cin, h, w), "o": (1, cout, h, w)}
    tensors = {"x": conv.inputs[0], "c": conv.out}
    layers = []
    x = "x"
    inputs = ["x"]
    if scaled:
        xt = QTensor((h, w, cin), 0.05, -7)
        st = QTensor((1, 1, cin), 1 / 255, -128)
        layers.append(SegLayer("mul", _binary("mul", xt, st, conv.inputs[0], broadcast=True),
                               ["x", "s"], "xs"))
        tensors.update(x=xt, s=st, xs=conv.inputs[0])
        shapes["s"] = (1, cin, 1, 1)
        inputs.append("s")
        x = "xs"
    layers.append(SegLayer("c", conv, [x], "c"))
    c = "c"
    if lut:
        t = QTensor(conv.out.shape, 0.02, 9)
        layers.append(SegLayer("l", Layer("lut", [conv.out], t,
                                          arrays={"table": rng.integers(-128, 128, 256)},
                                          ops=["relax.sigmoid"]), ["c"], "cl"))
        tensors["cl"] = t
        c = "cl"
    yt = QTensor((h, w, cout), 0.07, -11)
    if skip_is_input:
        inputs.append("y")
        shapes["y"] = (1, cout, h, w)
    else:
        conv2 = _with_out(_conv_layer(rng, h, w, cin, cout, 1, s_in=0.03, zp_in=4), yt)
        layers.append(SegLayer("c2", conv2, [x], "y"))
    tensors["y"] = yt
    out = QTensor((h, w, cout), 0.08, 2)
    ct = tensors[c]
    add = _binary("add", *((ct, yt) if conv_first else (yt, ct)), out)
    layers.append(SegLayer("add", add, [c, "y"] if conv_first else ["y", c], "o"))
    tensors["o"] = out
    return Segment("t", inputs, ["o"], layers, shapes, tensors)


@pytest.mark.parametrize("conv_first", [True, False], ids=["conv_first", "conv_second"])
@pytest.mark.parametrize("case", [
    {"h": 6, "w": 10, "cin": 24, "cout": 16},
    {"h": 30, "w": 40, "cin": 32, "cout": 24},                  # bands
    {"h": 12, "w": 12, "cin": 48, "cout": 40, "k": 3},             # N-tiles, a 3x3 conv
    {"h": 8, "w": 12, "cin": 16, "cout": 16, "lut": True},         # after the conv's fused LUT
    {"h": 8, "w": 12, "cin": 16, "cout": 24, "scaled": True},      # with a scaled input too
    {"h": 8, "w": 12, "cin": 16, "cout": 24, "skip_is_input": False},  # y made after the conv
], ids=["one_band", "bands", "tiles_3x3", "lut", "scaled", "y_after"])
def test_residual_add_fuses_into_the_conv_bit_exact(small, conv_first, case):
    """conv -> add(., y) is one conv layer whose tiles get y added before the store, in
    either operand order (the ADD's parameters swapped to put the conv first), equal to
    the unfused integer reference."""
    seg = _residual(**case, conv_first=conv_first)
    model = _check(small, seg, seed=5)
    convs = [ly for ly in model.segments[0].layers if ly["fused_residual"]]
    assert len(convs) == 1 and convs[0]["ops"][-1] == "relax.add"
    assert "add" not in [ly["kind"] for ly in model.segments[0].layers]
    assert convs[0]["fused_lut"] == case.get("lut", False)
    assert convs[0]["fused_scale"] == case.get("scaled", False)


@pytest.mark.parametrize("order", ["band", "tile"])
def test_residual_program_with_streamed_weights(small, order):
    """The conv program alone: streamed weights, 3 N-tiles, 5 bands, either loop order;
    each tile's weight and residual tokens are popped in the order they are pushed, and
    the result is the requantized conv plus the residual, as ``rounding.add_int8``."""
    from edgec.targets.edge_npu import programs
    from edgec.targets.edge_npu.isa import Space
    from edgec.targets.edge_npu.simulator import Simulator

    from .reference import conv_requant
    from .test_functional import _layer

    rng = np.random.default_rng(9)
    _, x, wt, bias, mult, shift = _layer(rng, 20, 12, 12, 40, 3, 1, (1, 1, 1, 1), False)
    conv = programs.Conv(20, 12, 12, 40, 3, 3, 1, (1, 1, 1, 1))
    y = rng.integers(-128, 128, (20, 12, 40)).astype(np.int8)
    gl = rounding.Rounding.GEMMLOWP  # what conv2d_layer emits before lowering sets rnd
    p = rounding.add_params(0.04, 0.07, 0.08, gl)
    block = programs.add_block(zp1=4, zp2=-11, zp_out=2, qmin=-128, qmax=127, **p)
    sim = Simulator(small, host_bytes=1 << 22)
    wpack = programs.pack_weights(conv, wt, small.cols)
    ppack = programs.pack_requant(conv, bias, mult, shift, 4, -128, 127, small.cols)
    sim.mem.write(Space.PCACHE, 0, ppack)
    sim.mem.write(Space.PCACHE, 8192, np.asarray(block, dtype=np.int32))
    sim.mem.write(Space.HOST, 0, x)
    sim.mem.write(Space.HOST, 1 << 19, y)
    sim.mem.write(Space.HOST, 1 << 20, wpack)
    place = programs.Placement(inp=(Space.HOST, 0), out=(Space.HOST, 1 << 21), wgt=16384,
                               params=0, zp_in=-2, stream_from=1 << 20,
                               residual=((Space.HOST, 1 << 19), 8192))
    lp = programs.conv2d_layer(small, conv, place, "ws", band_rows=4, order=order)
    rep = sim.run(lp.instrs + programs.end())
    got = sim.mem.read(Space.HOST, 1 << 21, y.size).reshape(y.shape)
    c = conv_requant(x, wt, bias, mult, shift, 4, -128, 127, 1, (1, 1, 1, 1), -2)
    want = rounding.add_int8(c, 4, y, -11, p, 2, -128, 127, gl)
    np.testing.assert_array_equal(got, want)
    assert lp.bands == 5 and rep.streamed_weights == wpack.size


def test_residual_conv_takes_fewer_cycles(npu):
    """cls's block projection (3 x 96 x 88 -> 16, 1x1) plus its skip: one layer beats
    conv then add."""
    fused = lower(npu, [_residual(h=3, w=96, cin=88, cout=16)])
    plain = lower(npu, [_residual(h=3, w=96, cin=88, cout=16)], fuse=False)
    assert len(fused.segments[0].layers) == 1 and len(plain.segments[0].layers) == 2
    assert (simulate(npu, fused.segments[0].program).cycles <
            simulate(npu, plain.segments[0].program).cycles)
