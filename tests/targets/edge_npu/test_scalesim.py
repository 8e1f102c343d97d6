"""Compute cycles of generated layers against SCALE-Sim 3.0.0 (the independent oracle).

SCALE-Sim runs in its own venv (numpy < 2): $EDGEC_SCALESIM_PYTHON, default
<repo>/.venv-scalesim/bin/python. All layers of a dataflow go in one subprocess.

Recorded per-layer constant: SCALE-Sim streams a fold's whole T at once; edge-npu's
256 KiB accumulators cut WS layers into bands of output rows and each band pays the
fold fill again (OS: a ragged last pixel tile per band is an extra fold), so
ours = SCALE-Sim + (our folds - SCALE-Sim's folds) * fill (OS: fill + K), and
the remaining difference must be within +-2 cycles (SCALE-Sim counts one cycle fewer).

Limited bandwidth: one weight-streaming-bound FC layer against SCALE-Sim's USER
bandwidth mode, set up so it reads each weight once (see the test and the README for
what SCALE-Sim 3.0.0 counts when the filter does not fit its SRAM).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from edgec.targets.edge_npu import programs, timing
from edgec.targets.edge_npu.config import Link
from edgec.targets.edge_npu.isa import Dataflow, Space
from edgec.targets.edge_npu.simulator import simulate

REPO = Path(__file__).resolve().parents[3]
ORACLE = Path(__file__).with_name("scalesim_oracle.py")
CREATE = ('python3 -m venv .venv-scalesim && .venv-scalesim/bin/pip install '
          'scalesim==3.0.0 "numpy<2"')

# name: (Conv, SCALE-Sim topology rows [h, w, kh, kw, c, m, s] whose totals add up)
LAYERS = {
    "conv3x3_34": (programs.Conv(34, 34, 64, 128, 3, 3), [[34, 34, 3, 3, 64, 128, 1]]),
    "gemm_M40": (programs.Conv(40, 1, 200, 100), [[40, 1, 1, 1, 200, 100, 1]]),
    "conv_K180": (programs.Conv(16, 16, 20, 48, 3, 3), [[16, 16, 3, 3, 20, 48, 1]]),
    "gemm_N1": (programs.Conv(300, 1, 128, 1), [[300, 1, 1, 1, 128, 1, 1]]),
    "conv_s2": (programs.Conv(29, 29, 32, 70, 3, 3, 2), [[29, 29, 3, 3, 32, 70, 2]]),
    # depthwise 96 channels = blocks of 64 and 32 channels, each a dense GEMM
    "depthwise96": (programs.Conv(30, 30, 96, 96, 3, 3, 1, (1, 1, 1, 1), True),
                    [[32, 32, 3, 3, 64, 64, 1], [32, 32, 3, 3, 32, 32, 1]]),
    "conv_banded": (programs.Conv(58, 58, 32, 64, 3, 3), [[58, 58, 3, 3, 32, 64, 1]]),
}


def scalesim_python() -> str:
    py = os.environ.get("EDGEC_SCALESIM_PYTHON", str(REPO / ".venv-scalesim/bin/python"))
    if not Path(py).exists():
        pytest.fail(f"SCALE-Sim interpreter {py} not found; create it from the repo root "
                    f"with: {CREATE} (or set EDGEC_SCALESIM_PYTHON)")
    return py


def run_oracle(spec: dict) -> list[dict]:
    res = subprocess.run([scalesim_python(), str(ORACLE)], input=json.dumps(spec),
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


@cache
def scalesim_totals(dataflow: str) -> dict[str, int]:
    rows, owners = [], []
    for name, (_, topo) in LAYERS.items():
        for i, t in enumerate(topo):
            rows.append([f"{name}_{i}", *t])
            owners.append(name)
    spec = {"rows": 64, "cols": 64, "dataflow": dataflow, "bandwidth": None, "layers": rows}
    totals: dict[str, int] = {}
    for owner, row in zip(owners, run_oracle(spec)):
        assert row["stall_cycles"] == 0
        totals[owner] = totals.get(owner, 0) + row["total_cycles"]
    return totals


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_compute_cycles_match_scalesim(npu, name, dataflow):
    conv = LAYERS[name][0]
    place = programs.Placement(inp=(Space.HOST, 0), out=(Space.HOST, 0), wgt=0, params=0)
    # the fewest bands (the default halves them for a vector queue; refills add up alike)
    lp = programs.conv2d_layer(npu, conv, place, dataflow,
                               band_rows=programs.max_band_rows(npu, conv))
    rep = simulate(npu, lp.instrs + programs.end())
    # the recorded constant: band re-fills (an OS fold re-streams all of K as well)
    df = Dataflow[dataflow.upper()]
    k = conv.kh * conv.kw * conv.cin
    extra = (rep.folds - lp.folds) * timing.fold_cycles(npu, df, 0 if df == Dataflow.WS else k)
    if lp.bands == 1:
        assert extra == 0
    ref = scalesim_totals(dataflow)[name]
    print(f"{name} {dataflow}: edge-npu {rep.gemm_cycles} SCALE-Sim {ref} "
          f"band refill {extra}")
    assert abs(rep.gemm_cycles - extra - ref) <= 2


def test_weight_streaming_bound_gemm_near_scalesim(npu):
    """FC 512 -> 512 on one activation vector: 256 KiB of weights each used once, over a
    1 B/cycle host link (0.5 GB/s at 500 MHz, inside the 0.4-0.6 GB/s Edge TPU link
    range; SCALE-Sim takes whole words/cycle). SCALE-Sim is given a filter SRAM that
    holds the layer, so it prefetches every weight once before compute (its DRAM
    reads are the weight bytes) and never enters its stall path; its "Total Cycles
    (incl. prefetch)" is then prefetch + compute + partial-sum write-back, serial.
    edge-npu streams N-tile by N-tile overlapping compute, so it may come in lower by
    up to the compute time; both must be dominated by bytes / bandwidth.
    """
    k = n = 512
    cfg = replace(npu, link=Link("1B/cycle", 0.5, 0.0, npu.link.pj_per_byte))
    assert cfg.host_bytes_per_cycle == 1.0
    place = programs.Placement(inp=(Space.HOST, 0), out=(Space.HOST, 1 << 20), wgt=0,
                               params=0, stream_from=1 << 24)
    lp = programs.gemm_layer(cfg, 1, k, n, place, "ws")
    rep = simulate(cfg, lp.instrs + programs.end())
    assert rep.streamed_weights == k * n
    assert rep.busy["load"] > 10 * rep.busy["compute"]  # clearly weight-streaming bound
    spec = {"rows": 64, "cols": 64, "dataflow": "ws", "bandwidth": 1, "sram_kb": 8192,
            "layers": [["fc", 1, 1, 1, 1, k, n, 1]]}
    (ref,) = run_oracle(spec)
    assert ref["stall_cycles"] == 0 and ref["dram_filter_reads"] == k * n
    assert ref["dram_filter_start"] == -k * n  # the whole filter, before cycle 0
    print(f"FC {k}x{n} M=1 at 1 B/cycle: edge-npu {rep.cycles} cycles (load busy "
          f"{rep.busy['load']}, compute {rep.busy['compute']}); SCALE-Sim incl. prefetch "
          f"{ref['total_with_prefetch']} (compute {ref['total_cycles']}, DRAM filter "
          f"{ref['dram_filter_reads']} / ifmap {ref['dram_ifmap_reads']} / ofmap "
          f"{ref['dram_ofmap_writes']} words): "
          f"{rep.cycles / ref['total_with_prefetch'] - 1:+.1%}")
    assert abs(rep.cycles / ref["total_with_prefetch"] - 1) <= 0.20


def test_missing_scalesim_fails_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEC_SCALESIM_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(pytest.fail.Exception, match="venv-scalesim"):
        scalesim_python()
