"""Every real model imports, builds for the host and matches ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

import edgec
from edgec.bench_ort import run_onnxruntime
from edgec.examples.models import model_path
from tests.real.conftest import REL_TOL, SHAPES, record, relative_error

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(SHAPES))
def test_host_matches_onnxruntime(name: str, real_feeds, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = model_path(name)
    shapes = {k: v for k, v in SHAPES[name].items()}
    pkg = edgec.build(path, "host", input_shapes=shapes, output=tmp_path / f"{name}.edgec")
    feeds = real_feeds[name]
    got = edgec.load(tmp_path / f"{name}.edgec").run(feeds)
    want = run_onnxruntime(path, feeds)
    assert list(got) == list(want), "output names and order follow the ONNX model"
    errors = {}
    for key in want:
        assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype
        err, rel = relative_error(got[key], want[key])
        errors[key] = {"max_abs": err, "rel_to_range": rel}
        assert rel < REL_TOL, f"{name}/{key}: max abs error {err:.3g} ({rel:.3g} of range)"
    record(name, "host", errors)
    assert pkg.report["model"]["macs"] > 0
    assert np.isfinite(list(got.values())[0]).all()
