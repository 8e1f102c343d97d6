"""Partitioning a QDQ model: what goes to the NPU, what stays on the CPU and why."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.targets.edge_npu.config import load_config
from edgec.targets.edge_npu.layers import build_table
from edgec.targets.edge_npu.partition import partition
from edgec.targets.edge_npu.patterns import TABLE

from .qdq_fixture import cls_relax


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qdq"))


@pytest.fixture(scope="module")
def part_default(workdir):
    return partition(cls_relax(workdir), load_config("edge-npu"))


def test_table_is_data():
    assert {"conv", "gemm", "add", "mul", "lut", "maxpool", "global_avgpool", "reshape",
            "concat", "transpose"} <= set(TABLE["layers"])
    for op in ("relax.sigmoid", "relax.tanh", "relax.nn.gelu", "relax.clip", "relax.divide"):
        assert op in TABLE["layers"]["lut"]["ops"]


def test_ppocr_cls_one_segment_all_macs(part_default):
    """Everything but the float input's quantize and the softmax tail is on the NPU."""
    p = part_default
    assert len(p.segments) == 1
    kinds = [sl.layer.kind for sl in p.segments[0].layers]
    assert kinds.count("conv") == 54  # 53 Conv + the Gemm
    assert {"lut", "mul", "add", "gap", "maxpool"} <= set(kinds)
    cpu = {c["op"] for c in p.cpu_ops}
    assert "relax.nn.conv2d" not in cpu and "relax.matmul" not in cpu
    assert cpu <= {"relax.quantize", "relax.dequantize", "relax.reshape", "relax.nn.softmax"}
    assert all(c["reason"] for c in p.cpu_ops)
    softmax = [c for c in p.cpu_ops if c["op"] == "relax.nn.softmax"]
    assert "softmax" in softmax[0]["reason"]


def test_small_config_splits_and_says_why(workdir):
    """On edge-npu-s the 200-channel 5x5 depthwise rows do not fit a 64 KiB bank: those
    layers stay on the CPU with that reason, and the NPU work splits into segments."""
    p = partition(cls_relax(workdir), load_config("edge-npu-s"))
    assert len(p.segments) > 1
    convs = [c for c in p.cpu_ops if c["op"] == "relax.nn.conv2d"]
    assert convs and all("does not fit edge-npu-s" in c["reason"] for c in convs)
    assert all(c["reason"] for c in p.cpu_ops)


def test_hard_swish_lut_matches_float_graph():
    """x * Q(x + 3) / 6 written as three QDQ steps: each step's table is exact."""
    s_in, zp_in, s_out, zp_out = 0.05, -25, 0.0235, -128
    table = build_table([lambda x: x + np.float32(3)], s_in, zp_in, s_out, zp_out)
    q = np.arange(-128, 128)
    ref = np.clip(np.rint(((q - zp_in) * np.float32(s_in) + 3) / np.float32(s_out)) + zp_out,
                  -128, 127)
    assert np.array_equal(table, ref)
