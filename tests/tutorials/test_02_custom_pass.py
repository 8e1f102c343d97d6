"""tutorials/02_custom_pass.ipynb runs top to bottom (write, register, apply a pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tutorials.conftest import execute_notebook

pytestmark = pytest.mark.slow


def test_custom_pass_notebook(tmp_path: Path) -> None:
    nb = execute_notebook("02_custom_pass.ipynb", tmp_path, timeout=300)
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "'x / c -> x * (1/c)': 18" in text  # fired on each HardSwish divide
    assert "div-to-mul" in text and "median" in text
