"""Real models cross-compiled for aarch64 and run under qemu match ONNX Runtime."""

from __future__ import annotations

import pytest

import edgec
from edgec.bench_ort import run_onnxruntime
from edgec.examples.models import model_path
from tests.real.conftest import REL_TOL, SHAPES, record, relative_error

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest.mark.parametrize(
    "name, target",
    [("ppocr-cls", "arm-cpu:cortex-a72"), ("silero-vad", "arm-cpu:cortex-a55")],
)
def test_arm_matches_onnxruntime(name: str, target: str, real_feeds, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = model_path(name)
    out = tmp_path / f"{name}.edgec"
    edgec.build(path, target, input_shapes=SHAPES[name], output=out)
    pkg = edgec.load(out)
    assert pkg.manifest["target"]["name"] == target
    feeds = real_feeds[name]
    got = pkg.run(feeds)
    want = run_onnxruntime(path, feeds)
    errors = {}
    for key in want:
        err, rel = relative_error(got[key], want[key])
        errors[key] = {"max_abs": err, "rel_to_range": rel}
        assert rel < REL_TOL, f"{name}/{key} on {target}: max abs error {err:.3g}"
    record(name, target, errors)
