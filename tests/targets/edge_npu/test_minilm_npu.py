"""all-MiniLM-L6-v2 (edgec's own int8 PTQ on real sentences) built for edge-npu: its
1 x 128 x 384 token tensors are taken as 128 x 384 matrices, so the encoder's
projections and feed-forward matmuls run on the NPU (bias and GELU as a LUT fused into
them); layer norm, softmax and the attention's activation x activation matmuls stay on
the CPU, each with its reason, and so do the residual adds: the npu QDQ style leaves a
sum only CPU ops read (layer norm's input) in float."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import assert_segments_bit_exact

pytestmark = pytest.mark.slow


def test_minilm_matmuls_on_the_npu_bit_exact(tmp_path):
    from edgec.driver import import_model
    from edgec.examples import data
    from edgec.examples.models import model_path, real_model
    from edgec.targets.edge_npu.config import load_config
    from edgec.targets.edge_npu.offload import offload
    from edgec.targets.edge_npu.target import npu_target

    calib = data.minilm_inputs(8, seed=0)
    np.savez(tmp_path / "calib.npz", **{k: np.concatenate([c[k] for c in calib])
                                        for k in calib[0]})
    imp = import_model(model_path("minilm"), npu_target("edge-npu"),
                       input_shapes=dict(real_model("minilm").input_shapes),
                       quantize="int8", calib=str(tmp_path / "calib.npz"))
    cfg = load_config("edge-npu")
    off = offload(imp.mod, cfg)
    rep = off.report
    assert rep["macs"]["npu_fraction"] >= 0.9
    kinds = {("conv+lut" if ly["fused_lut"] else "conv+add" if ly["fused_residual"]
              else ly["kind"]) for ly in rep["layers"]}
    assert {"conv", "conv+lut"} <= kinds and "conv+add" not in kinds
    reasons = {c["op"]: c["reason"] for c in rep["ops"]["cpu"]}
    assert "float reduction" in reasons["relax.nn.layer_norm"]
    assert "relax.nn.softmax" in reasons
    assert_segments_bit_exact(off.model, off.partition.segments, cfg, seed=3)
