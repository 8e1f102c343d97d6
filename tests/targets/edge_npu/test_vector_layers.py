"""Vector-unit layer programs run on the simulator against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu import programs
from edgec.targets.edge_npu.isa import Op, Space, VecOp, clamp_block
from edgec.targets.edge_npu.simulator import Simulator
from edgec.targets.edge_npu.vector_layers import resize_layer

PARAM = 0
IN = 4096


def _resize(cfg, h, w, c, f, out_space=Space.PCACHE, two=True):
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
], ids=["small", "bands", "f3", "host", "one_pass", "long_rows"])
def test_resize_matches_numpy(small, h, w, c, f, space, two):
    x, got, prog = _resize(small, h, w, c, f, space, two)
    np.testing.assert_array_equal(got, np.repeat(np.repeat(x, f, axis=0), f, axis=1))
    stores = sum(i.op == Op.STORE for i in prog)
    if f * w * f * c < 1 << 14:  # the first pass stores whole bands, not rows
        assert stores < h * f
    else:
        assert stores >= h * f


def test_banded_stores_take_2f_minus_1_descriptors_per_band(npu):
    """det 320's FPN resize (40 x 40 x 96, x2): f first-pass STOREs per band (rows f
    output rows apart, pixels f apart) and f - 1 copies, not f per input row."""
    prog = resize_layer(npu, 40, 40, 96, 2, (Space.PCACHE, 0), (Space.PCACHE, 1 << 20),
                        (VecOp.CLAMP, 0), (VecOp.CLAMP, 0))
    loads = [i for i in prog if i.op == Op.LOAD]
    bands1 = sum(i.dram < 1 << 20 for i in loads)   # reads of the input
    bands2 = len(loads) - bands1                     # read-backs of stored rows
    assert 1 < bands1 < 40 and bands2 > 0
    assert sum(i.op == Op.STORE for i in prog) == 2 * bands1 + bands2
