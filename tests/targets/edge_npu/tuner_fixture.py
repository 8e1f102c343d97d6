"""A small NPU segment for tuner tests (importable without the test package, so a
subprocess can build it too): conv 3x3 -> hard-swish as x * lut(x) -> conv 1x1 ->
depthwise 3x3 -> conv 1x1."""

from __future__ import annotations

import numpy as np
from edgec.targets.edge_npu import intmath, programs
from edgec.targets.edge_npu.layers import Layer, QTensor
from edgec.targets.edge_npu.lower import SegLayer, Segment


def _conv_layer(rng, h, w, cin, cout, k, stride=1, dw=False, s_in=0.05, zp_in=3):
    pad = (k // 2,) * 4
    conv = programs.Conv(h, w, cin, cout, k, k, stride, pad, dw)
    shape = (cout, k, k) if dw else (cout, k, k, cin)
    ms = [intmath.quantize_multiplier(float(v)) for v in rng.uniform(1e-4, 2e-3, cout)]
    return Layer("conv", [QTensor((h, w, cin), s_in, zp_in)],
                 QTensor((conv.out_h, conv.out_w, cout), 0.04, -5),
                 {"conv": conv, "zp_out": -5, "qmin": -128, "qmax": 127},
                 {"weights": rng.integers(-127, 128, shape).astype(np.int8),
                  "bias": rng.integers(-4000, 4000, cout),
                  "mult": np.array([m for m, _ in ms]), "shift": np.array([s for _, s in ms])},
                 ["relax.nn.conv2d"])


def small_model(seed: int = 0) -> list[Segment]:
    """conv 3x3 -> hard-swish as x * lut(x) -> conv 1x1 -> depthwise 3x3 -> conv 1x1."""
    rng = np.random.default_rng(seed)
    c1 = _conv_layer(rng, 24, 24, 8, 24, 3, stride=2)
    t = c1.out
    table = intmath.build_lut(lambda v: np.clip(v + 3, 0, 6) / 6, t.scale, t.zp, 1 / 255, -128)
    hs = Layer("lut", [t], QTensor(t.shape, 1 / 255, -128), arrays={"table": table},
               ops=["relax.add", "relax.clip", "relax.divide"])
    mult, shift = intmath.quantize_multiplier(t.scale * (1 / 255) / 0.03)
    mul = Layer("mul", [t, hs.out], QTensor(t.shape, 0.03, -20),
                {"broadcast": False, "zp1": t.zp, "zp2": -128, "mult": mult, "shift": shift,
                 "zp_out": -20, "qmin": -128, "qmax": 127}, ops=["relax.multiply"])
    c2 = _conv_layer(rng, 12, 12, 24, 72, 1, s_in=0.03, zp_in=-20)
    c3 = _conv_layer(rng, 12, 12, 72, 72, 3, dw=True, s_in=0.04, zp_in=-5)
    c4 = _conv_layer(rng, 12, 12, 72, 40, 1, s_in=0.04, zp_in=-5)
    layers = [SegLayer("c1", c1, ["x"], "a"), SegLayer("hs", hs, ["a"], "b"),
              SegLayer("mul", mul, ["a", "b"], "c"), SegLayer("c2", c2, ["c"], "d"),
              SegLayer("c3", c3, ["d"], "e"), SegLayer("c4", c4, ["e"], "y")]
    tensors = {"x": c1.inputs[0], "a": t, "b": hs.out, "c": mul.out, "d": c2.out,
               "e": c3.out, "y": c4.out}
    return [Segment("s", ["x"], ["y"], layers, {"x": (1, 8, 24, 24), "y": (1, 40, 12, 12)},
                    tensors)]
