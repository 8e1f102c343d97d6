"""tutorials/01_quickstart.ipynb runs top to bottom (inspect, build host+arm, run, bench)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tutorials.conftest import execute_notebook

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def test_quickstart_notebook(tmp_path: Path) -> None:
    nb = execute_notebook("01_quickstart.ipynb", tmp_path)
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "max abs error vs ONNX Runtime" in text
    assert "ratio edgec / onnxruntime" in text
