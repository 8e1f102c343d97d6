"""tutorials/05_edge_npu.ipynb runs top to bottom: build PP-OCR cls for edge-npu, run it,
plot per-layer cycles and energy, tune, rebuild with the database, compare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.tutorials.conftest import execute_notebook

pytestmark = pytest.mark.slow


def test_edge_npu_notebook(tmp_path: Path) -> None:
    nb = execute_notebook("05_edge_npu.ipynb", tmp_path)
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "MACs on NPU: " in text and "(100.0%)" in text
    assert "class agrees with the float model on 6 of 6 lines" in text
    assert "resumed: 40 trials were in the database, 20 new" in text
    assert "outputs identical: True" in text
    m = re.search(r"default ([\d,]+) cycles -> tuned ([\d,]+) cycles", text)
    assert m is not None
    default, tuned = (int(g.replace(",", "")) for g in m.groups())
    assert tuned <= default
    assert (tmp_path / "cls_layers.png").stat().st_size > 0
    assert (tmp_path / "cls_tuned.png").stat().st_size > 0
