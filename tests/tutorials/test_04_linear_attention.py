"""tutorials/04_linear_attention.ipynb runs top to bottom (detection, errors, speed, pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tutorials.conftest import execute_notebook

pytestmark = pytest.mark.slow


def test_linear_attention_notebook(tmp_path: Path) -> None:
    nb = execute_notebook("04_linear_attention.ipynb", tmp_path)
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "'N': 1024" in text
    assert "max change from padding keys: 0.0" in text
    assert "budget 0.001: changed []" in text
