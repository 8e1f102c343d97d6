"""tutorials/03_quantization.ipynb runs top to bottom (calibrate, sensitivity table,
accuracy budget, the exported QDQ model in ONNX Runtime)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tutorials.conftest import execute_notebook

pytestmark = pytest.mark.slow


def test_quantization_notebook(tmp_path: Path) -> None:
    nb = execute_notebook("03_quantization.ipynb", tmp_path)
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "most sensitive layers" in text
    assert "kept in float: [" in text
    agree = re.search(r"ONNX Runtime int8 vs float top-1 agreement: ([0-9.]+)", text)
    assert agree is not None and float(agree.group(1)) >= 0.9, text[-2000:]
