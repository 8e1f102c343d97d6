"""``edgec quantize``: a QDQ model ONNX Runtime runs, a report, one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from edgec import cli_quantize
from edgec.errors import EdgecError, OutputError
from edgec.passes.quantize.calibrate import session

from tests.passes.quantize._models import conv_model, feeds


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgec")
    sub = p.add_subparsers(dest="command")
    cli_quantize.add_parsers(sub)
    args = p.parse_args(argv)
    return cli_quantize.cmd_quantize(args)


def test_quantize_writes_qdq_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = conv_model()
    onnx.save(model, tmp_path / "m.onnx")
    fs = feeds(model, 10)
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in fs]))
    out = tmp_path / "m.int8.onnx"
    rc = _main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
                "-o", str(out), "--accuracy-budget", "cosine=0.99",
                "--report", str(tmp_path / "r.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "1 of 1 layers in int8" in text and "cosine" in text
    q = onnx.load(out)
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 2 and "DequantizeLinear" in ops
    y = session(q).run(None, fs[0])[0]
    ref = session(model).run(None, fs[0])[0]
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.99
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["samples"] == {"calib": 8, "held_out": 2, "source": str(tmp_path / "calib.npz")}
    assert report["accuracy"]["y"]["cosine"] > 0.99


def test_impossible_budget_fails_with_table(tmp_path: Path) -> None:
    model = conv_model()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in feeds(model, 5)]))
    with pytest.raises(EdgecError, match="cannot be met(.|\n)*layer +kind +cosine"):
        _main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
               "-o", str(tmp_path / "o.onnx"), "--accuracy-budget", "cosine=1.0"])


def test_bad_budget_and_missing_calib(tmp_path: Path) -> None:
    onnx.save(conv_model(), tmp_path / "m.onnx")
    with pytest.raises(EdgecError, match="METRIC=VALUE"):
        _main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path),
               "--accuracy-budget", "psnr=3"])
    with pytest.raises(EdgecError, match="needs --calib"):
        cli_quantize.quantize_for_build(conv_model(), "int8", None)


def test_unwritable_output_is_one_error_and_no_file(tmp_path: Path) -> None:
    onnx.save(conv_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in feeds(conv_model(), 5)]))
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(OutputError, match="cannot write"):
        _main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"),
               "-o", str(tmp_path / "f" / "q.onnx")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "f", "m.onnx"]


def _report(cosine: float, budget: str | None = None, kept: list[str] | None = None) -> dict:
    return {"layers": {"int8": 3, "total": 4}, "method": "percentile",
            "samples": {"calib": 8, "held_out": 2}, "budget": budget,
            "kept_float": kept or [], "element_wise_float": 0,
            "accuracy": {"a": {"cosine": 0.9999, "snr_db": 40.0, "max_abs": 0.1},
                         "b": {"cosine": cosine, "snr_db": 12.5, "max_abs": 0.3}}}


def test_build_summary_names_the_worst_output_and_hints_when_it_is_low() -> None:
    good = cli_quantize.build_summary(_report(0.995))
    assert good == [("int8: 3 of 4 layers in int8 (percentile, 8 calibration + 2 held-out "
                     "samples); held-out accuracy vs float (b): cosine 0.9950, SNR 12.5 dB")]
    low = cli_quantize.build_summary(_report(0.7373))
    assert len(low) == 2 and low[1].startswith("note: held-out cosine 0.7373 is low")
    assert "--accuracy-budget cosine=0.99" in low[1] and "--calib-method auto" in low[1]
    auto = _report(0.7373)
    auto["auto"] = {"chosen": "percentile",
                    "held_out_cosine": {"percentile": 0.7373, "minmax": 0.71}}
    text = cli_quantize.build_summary(auto)
    assert "percentile chosen by held-out cosine (percentile 0.7373, minmax 0.7100)" in text[0]
    assert "--calib-method" not in text[1]
    # a budget the user set was met (else the build fails): no hint, but what it kept
    kept = cli_quantize.build_summary(_report(0.96, "cosine=0.95", ["fc2"]))
    assert kept[1:] == ["kept in float for cosine=0.95: fc2"]


def test_build_prints_the_quantization_summary(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    model = conv_model()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in feeds(model, 10)]))
    proc = run_cli("build", str(tmp_path / "m.onnx"), "--target", "host", "--quantize", "int8",
                   "--calib", str(tmp_path / "calib.npz"), "--calib-method", "auto",
                   "-o", str(tmp_path / "m.edgec"))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("int8: "))
    assert "1 of 1 layers in int8 (" in line and "chosen by held-out cosine (percentile " in line
    assert "8 calibration + 2 held-out" in line
    cosine = float(line.rsplit("cosine ", 1)[1].split(",")[0])
    assert 0.99 < cosine <= 1.0 and "note:" not in proc.stdout
