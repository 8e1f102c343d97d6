"""The sample plugin (tests/plugin_sample) seen through the CLI, as a user would.

Needs `pip install --no-deps -e tests/plugin_sample` (done by `make install`).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from tests.conftest import run_cli

from ._harness import onnx_model



def test_sample_plugin_is_installed() -> None:
    """`make test` installs it; without it the plugin tests below cannot mean anything."""
    names = [ep.name for ep in importlib.metadata.entry_points(group="edgec.passes")]
    assert "drop-dropout" in names, "pip install --no-deps -e tests/plugin_sample"


def test_edgec_passes_lists_the_plugin_with_its_origin() -> None:
    proc = run_cli("passes", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["drop-dropout"]["origin"] == "plugin:edgec-sample-plugin"
    assert rows["drop-dropout"]["default"] is False
    assert rows["fold-batchnorm"]["origin"] == "built-in"


def test_build_with_the_plugin_pass(tmp_path: Path) -> None:
    model = onnx_model(
        [helper.make_node("Dropout", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [])
    onnx.save(model, tmp_path / "m.onnx")
    proc = run_cli("build", str(tmp_path / "m.onnx"), "--pass", "drop-dropout",
                   "-o", str(tmp_path / "m.edgec"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "drop-dropout" in out["manifest"]["passes"]
    assert "drop-dropout" in out["report"]["passes"]


def test_unknown_pass_is_one_line_error(tmp_path: Path) -> None:
    proc = run_cli("build", "nowhere.onnx", "--pass", "no-such-pass", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown pass 'no-such-pass'" in proc.stderr
