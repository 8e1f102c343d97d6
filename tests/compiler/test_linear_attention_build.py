"""`edgec build --linear-attention` end to end: the CLI rewrites the attention block of a
small ONNX model and report.json inside the package carries the per-block fields.

The model's output *is* the block's output projection, so the block error the report
gives (measured after the projection on the --calib samples) must equal the built
package's error against ONNX Runtime (the oracle) on the same samples.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgec.calibration import save_npz
from edgec.passes.attention_auto import worst_sample_error

from tests.conftest import run_cli
from tests.passes.test_linear_attention import _attention_onnx, _feeds

N, HEADS, D = 32, 2, 8


def _report(pkg: Path) -> dict:
    """report.json as stored in the package zip (not as the build printed it)."""
    with zipfile.ZipFile(pkg) as z:
        return json.loads(z.read("report.json"))


def _build(model: Path, npz: Path, pkg: Path, cli: bool, *flags: str) -> None:
    """``edgec build`` as a subprocess (``cli``), else the same options through
    ``driver.build`` in this process (what cmd_build passes; saves a TVM start-up)."""
    if cli:
        proc = run_cli("build", str(model), "--target", "host", "-o", str(pkg), "-q",
                       "--calib", str(npz), *flags)
        assert proc.returncode == 0, proc.stderr
        return
    from edgec.driver import build

    opts = dict(zip(flags[::2], flags[1::2], strict=True))
    options = {"linear_attention": opts["--linear-attention"],
               "attention_error": float(opts.get("--attention-error", 0.02))}
    build(model, "host", output=pkg, passes=["linear-attention"], options=options, calib=npz)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    d = tmp_path_factory.mktemp("la-build")
    path = d / "attn.onnx"
    onnx.save(_attention_onnx(n=N, d=D, heads=HEADS, mask="additive", proj=True), path)
    calib = [_feeds("additive", n=N, hid=HEADS * D, seed=s) for s in range(2)]
    npz = save_npz(d / "calib.npz", calib)
    return path, npz, calib


@pytest.mark.parametrize("mode,label,cli", [("force:favor:m=16", "favor(m=16)", True),
                                            ("force:elu", "elu", False)])
def test_build_force_reports_block_error(model: tuple[Path, Path, list[dict]], tmp_path: Path,
                                         mode: str, label: str, cli: bool) -> None:
    path, npz, calib = model
    pkg = tmp_path / "attn.edgec"
    _build(path, npz, pkg, cli, "--linear-attention", mode)
    rep = _report(pkg)["passes"]["linear-attention"]
    assert rep["mode"] == mode.split(":m=")[0]
    assert rep["changed"] == [f"attn0: {label}"]
    (blk,) = rep["blocks"]
    assert blk["N"] == N and blk["heads"] == HEADS
    assert blk["decision"] == label and blk["why"] == "forced"
    assert blk["error_at"].startswith("after the output projection")
    assert set(blk["errors"]) == {label}
    assert rep["calib_samples"] == len(calib)
    if mode.startswith("force:favor"):
        assert blk["m"] == 16 and blk["seed"] == 0  # the features can be regenerated

    # The oracle: the package itself against ONNX Runtime, same samples, same definition.
    import edgec

    p = edgec.load(pkg)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.stack([p.run(f)["y"] for f in calib])
    want = np.stack([sess.run(None, f)[0] for f in calib])
    err = worst_sample_error(got, want)
    assert err > 1e-3  # neither variant is exact here: the number is a real measurement
    assert blk["error"] == pytest.approx(err, rel=1e-2)
    assert rep["model_output_rel_error"] == pytest.approx(err, rel=1e-2)


def test_build_auto_reports_planning_budget(model: tuple[Path, Path, list[dict]],
                                            tmp_path: Path) -> None:
    """auto on the same model: the block says what it measured and why it declined."""
    path, npz, _ = model
    pkg = tmp_path / "attn.edgec"
    _build(path, npz, pkg, False, "--linear-attention", "auto", "--attention-error", "0.05")
    rep = _report(pkg)["passes"]["linear-attention"]
    assert rep["mode"] == "auto" and rep["error_budget"] == 0.05
    assert rep["planning_budget"] == pytest.approx(0.025)
    (blk,) = rep["blocks"]
    assert blk["error_at"].startswith("after the output projection")
    assert blk["errors"] and all(e >= 0 for e in blk["errors"].values())
    # Random weights at N = 32 give logits of a trained model's size: every candidate
    # misses the budget, so auto keeps softmax and says so with the numbers it measured.
    assert min(blk["errors"].values()) > rep["planning_budget"]
    assert rep["changed"] == [] and blk["decision"] == "softmax"
    assert blk["why"].startswith("no variant meets the error budget 0.05 (planning at 0.025)")
    assert "model_output_rel_error" not in rep  # nothing rewritten, nothing to measure

