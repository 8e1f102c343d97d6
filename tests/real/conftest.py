"""Real models (from PyPI packages) built once per session and checked against ONNX Runtime."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgec.atomic import atomic_write_text, file_lock

# Input shapes used for the real-model suite (the detector at its deployed 640x640).
SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "ppocr-cls": {"x": (1, 3, 48, 192)},
    "ppocr-det": {"x": (1, 3, 640, 640)},
    "ppocr-rec": {"x": (1, 3, 48, 320)},
    "silero-vad": {"input": (16, 576), "h": (1, 1, 128), "c": (1, 1, 128)},
    "minilm": {},
}
# Max abs error allowed, relative to each output's value range (max - min).
REL_TOL = 1e-4
RESULTS = Path(os.environ.get("EDGEC_REAL_RESULTS", "real-model-errors.json"))


def relative_error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max abs error, that error over the reference's value range)."""
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    span = float(want.max() - want.min()) or 1.0
    return err, err / span


def record(model: str, target: str, errors: dict[str, Any]) -> None:
    """Append measured errors to a JSON file (read for the closing note and README).

    Locked and written atomically: the suite runs on several pytest-xdist workers.
    """
    with file_lock(RESULTS.with_name(f".{RESULTS.name}.lock")):
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        data.setdefault(model, {})[target] = errors
        atomic_write_text(RESULTS, json.dumps(data, indent=2, sort_keys=True))


@pytest.fixture(scope="session")
def real_feeds() -> dict[str, dict[str, np.ndarray]]:
    from edgec.examples.data import example_inputs

    return {name: example_inputs(name, shapes=SHAPES[name] or None, seed=7)[0] for name in SHAPES}
