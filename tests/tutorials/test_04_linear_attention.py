"""tutorials/04_linear_attention.ipynb runs top to bottom (detection, errors, speed, pass)."""

from __future__ import annotations

import re
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
    assert "budget 0.001 (planning at 0.0005): changed []" in text
    assert "budget 0.1 (planning at 0.05): changed ['attn0: " in text
    assert "error measured at: softmax.V: no output projection" in text
    held = re.search(r"held out ([0-9.]+)", text)
    assert held is not None and float(held.group(1)) <= 0.1  # within the budget unseen
