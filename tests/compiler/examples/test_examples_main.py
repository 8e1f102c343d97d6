"""``python -m edgec.examples``: one feed, or ``--count N`` samples stacked as ``--calib``
reads them; bad flags are one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from edgec import calibration, frontend
from edgec.examples.__main__ import main


def test_count_writes_a_calibration_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    from edgec.examples.models import model_path

    out = tmp_path / "calib.npz"
    assert main(["ppocr-cls", "--count", "5", "--out", str(out)]) == 0
    assert "x (5, 3, 48, 192) float32" in capsys.readouterr().out
    x = np.load(out)["x"]
    assert len({x[i].tobytes() for i in range(5)}) == 5  # five different text lines
    inputs = frontend.graph_inputs(onnx.load(model_path("ppocr-cls"), load_external_data=False))
    inputs = [frontend.TensorSpec(i.name, (1, 3, 48, 192), i.dtype) for i in inputs]
    feeds = calibration.load_samples(out, inputs)
    assert len(feeds) == 5 and feeds[2]["x"].shape == (1, 3, 48, 192)


@pytest.mark.parametrize("argv, message", [
    (["ppocr-cls", "--count", "0"], "--count 0: expected at least 1"),
    (["silero-vad", "--count", "3"], "silero-vad samples are whole clips"),
])
def test_bad_count_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     argv: list[str], message: str) -> None:
    out = tmp_path / "x.npz"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not out.exists()
